// Drawing one mask on the tile: a polygon tool and a brush that adds or erases pixels.
//
// The mask being edited is a full-tile bitmap; the edit canvas (the tile's size, above the mask overlay)
// shows it in white with the polygon being drawn. Pointer events on the viewport are taken in the
// capture phase while a tool is active, so the viewer does not pan. When done, the bitmap is encoded as
// COCO compressed RLE (rle.js) and handed back; the server validates it like any mask.

import { encodeMask, fullBits } from "./rle.js";

const FILL = 0xb0ffffff; // white, 70% (ImageData is RGBA; little-endian Uint32 is 0xAABBGGRR)

export class MaskEditor {
  /**
   * viewport: the element receiving pointer events; canvas: the edit canvas in the stage;
   * toTile(event) -> {x, y} in tile pixels; onChange(): called after every stroke.
   */
  constructor(viewport, canvas, toTile, onChange = () => {}) {
    this.viewport = viewport;
    this.canvas = canvas;
    this.toTile = toTile;
    this.onChange = onChange;
    this.active = false;
    this.tool = "polygon"; // "polygon" | "brush" | "erase"
    this.radius = 6;
    this.points = [];
    this.painting = false;
    const take = (handler) => (event) => {
      if (!this.active) return;
      event.stopPropagation();
      event.preventDefault();
      handler(event);
    };
    viewport.addEventListener("pointerdown", take((e) => this.down(e)), true);
    viewport.addEventListener("pointermove", take((e) => this.move(e)), true);
    viewport.addEventListener("pointerup", take(() => { this.painting = false; }), true);
    viewport.addEventListener("dblclick", take(() => this.closePolygon()), true);
  }

  /** Start editing a `h`×`w` mask, from `decoded` (decodeMask output, or null for a new object). */
  start(decoded, h, w) {
    this.h = h;
    this.w = w;
    this.bits = fullBits(decoded, h, w);
    this.points = [];
    this.active = true;
    this.canvas.width = w;
    this.canvas.height = h;
    this.image = new ImageData(w, h);
    this.pixels = new Uint32Array(this.image.data.buffer);
    for (let i = 0; i < this.bits.length; i += 1) if (this.bits[i]) this.pixels[i] = FILL;
    this.canvas.classList.remove("hidden");
    this.viewport.classList.add("drawing");
    this.render();
  }

  stop() {
    this.active = false;
    this.points = [];
    this.canvas.classList.add("hidden");
    this.viewport.classList.remove("drawing");
  }

  setTool(tool) {
    this.tool = tool;
    if (tool !== "polygon") this.points = [];
    this.render();
  }

  /** The mask as COCO RLE, and how many pixels it has. */
  result() {
    let area = 0;
    for (let i = 0; i < this.bits.length; i += 1) area += this.bits[i];
    return { rle: encodeMask(this.bits, this.h, this.w), area };
  }

  set(i, value) {
    this.bits[i] = value;
    this.pixels[i] = value ? FILL : 0;
  }

  /** Add (value 1) or erase (0) a disc of `radius` tile pixels around (cx, cy). */
  disc(cx, cy, value) {
    const r = this.radius;
    const y0 = Math.max(0, Math.floor(cy - r));
    const y1 = Math.min(this.h - 1, Math.ceil(cy + r));
    const x0 = Math.max(0, Math.floor(cx - r));
    const x1 = Math.min(this.w - 1, Math.ceil(cx + r));
    for (let y = y0; y <= y1; y += 1) {
      for (let x = x0; x <= x1; x += 1) {
        const dx = x + 0.5 - cx;
        const dy = y + 0.5 - cy;
        if (dx * dx + dy * dy <= r * r) this.set(y * this.w + x, value);
      }
    }
  }

  /** Fill the polygon `points` (tile pixels): pixel centres inside by the even-odd rule are set. */
  fillPolygon(points, value = 1) {
    if (points.length < 3) return;
    const ys = points.map((p) => p.y);
    const yMin = Math.max(0, Math.floor(Math.min(...ys)));
    const yMax = Math.min(this.h - 1, Math.ceil(Math.max(...ys)));
    for (let y = yMin; y <= yMax; y += 1) {
      const sy = y + 0.5;
      const xs = [];
      for (let i = 0; i < points.length; i += 1) {
        const a = points[i];
        const b = points[(i + 1) % points.length];
        if ((a.y <= sy && b.y > sy) || (b.y <= sy && a.y > sy)) xs.push(a.x + ((sy - a.y) / (b.y - a.y)) * (b.x - a.x));
      }
      xs.sort((p, q) => p - q);
      for (let k = 0; k + 1 < xs.length; k += 2) {
        const from = Math.max(0, Math.ceil(xs[k] - 0.5));
        const to = Math.min(this.w - 1, Math.floor(xs[k + 1] - 0.5));
        for (let x = from; x <= to; x += 1) this.set(y * this.w + x, value);
      }
    }
  }

  /** Add a polygon vertex in tile pixels (what a click does with the polygon tool). */
  addPoint(x, y) {
    this.points.push({ x, y });
    this.render();
  }

  /** Close the polygon being drawn and fill it (Enter or a double click). */
  closePolygon() {
    if (this.points.length >= 3) {
      this.fillPolygon(this.points, 1);
      this.onChange();
    }
    this.points = [];
    this.render();
  }

  down(event) {
    const p = this.toTile(event);
    if (this.tool === "polygon") {
      if (event.detail > 1) return; // the second click of a double click closes instead
      this.addPoint(p.x, p.y);
      return;
    }
    this.painting = true;
    this.disc(p.x, p.y, this.tool === "brush" ? 1 : 0);
    this.render();
    this.onChange();
  }

  move(event) {
    if (!this.painting) return;
    const p = this.toTile(event);
    this.disc(p.x, p.y, this.tool === "brush" ? 1 : 0);
    this.render();
  }

  render() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      const ctx = this.canvas.getContext("2d");
      ctx.putImageData(this.image, 0, 0);
      if (this.points.length) {
        ctx.strokeStyle = "#ff3df5";
        ctx.lineWidth = Math.max(1, this.w / 400);
        ctx.beginPath();
        this.points.forEach((p, i) => (i ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y)));
        ctx.stroke();
        ctx.fillStyle = "#ff3df5";
        for (const p of this.points) ctx.fillRect(p.x - ctx.lineWidth, p.y - ctx.lineWidth, 2 * ctx.lineWidth, 2 * ctx.lineWidth);
      }
    });
  }
}
