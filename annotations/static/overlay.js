// Mask overlay on a <canvas> the size of the tile.
//
// Each mask becomes a sprite (its bounding box) packed into a few sprite-sheet canvases, so a redraw
// costs one clear plus one blit per mask, whatever the tile size. Outlines are recomputed only when the zoom
// changes a lot, so they stay visible when a 4096² tile is shown at a quarter of its size.

import { outlineBits } from "./rle.js";

const GOLDEN_ANGLE = 137.508;

/** The colour of mask `index`: {rgb: [r, g, b], css: "rgb(...)", soft: "rgba(..., 0.28)"}. */
export function maskColour(index) {
  const hue = (index * GOLDEN_ANGLE + 25) % 360;
  const [r, g, b] = hslToRgb(hue / 360, 0.85, 0.58);
  return { rgb: [r, g, b], css: `rgb(${r}, ${g}, ${b})`, soft: `rgba(${r}, ${g}, ${b}, 0.28)` };
}

function hslToRgb(h, s, l) {
  const a = s * Math.min(l, 1 - l);
  const f = (n) => {
    const k = (n + h * 12) % 12;
    return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

const SHEET_WIDTH = 4096;
const SHEET_MAX_HEIGHT = 8192;
const OWN_CANVAS_AREA = 1024 * 1024; // masks bigger than this get a canvas of their own

function rgbaWord(rgb, alpha) {
  // ImageData is RGBA in memory; on little-endian machines that is 0xAABBGGRR as a Uint32.
  return ((alpha << 24) | (rgb[2] << 16) | (rgb[1] << 8) | rgb[0]) >>> 0;
}

/**
 * Pack many small bitmaps into few canvases ("sprite sheets"), filling each with one putImageData.
 * items: [{w, h, bits, colour: Uint32}] -> [{canvas, sx, sy}] in the same order. Creating one canvas
 * per mask costs far more than the pixels themselves when there are hundreds of masks.
 */
function packSprites(items) {
  const placed = new Array(items.length);
  const order = items.map((_, i) => i).sort((a, b) => items[b].h - items[a].h);
  let sheet = null;
  const sheets = [];
  const newSheet = () => {
    sheet = { members: [], x: 0, y: 0, shelf: 0, width: 0 };
    sheets.push(sheet);
  };
  for (const i of order) {
    const { w, h } = items[i];
    if (w * h > OWN_CANVAS_AREA || w > SHEET_WIDTH) {
      sheets.push({ members: [i], x: w, y: 0, shelf: h, width: w, own: true });
      placed[i] = { sheet: sheets[sheets.length - 1], sx: 0, sy: 0 };
      continue;
    }
    if (!sheet) newSheet();
    if (sheet.x + w > SHEET_WIDTH) {
      sheet.y += sheet.shelf + 1;
      sheet.x = 0;
      sheet.shelf = 0;
    }
    if (sheet.y + h > SHEET_MAX_HEIGHT) newSheet();
    placed[i] = { sheet, sx: sheet.x, sy: sheet.y };
    sheet.members.push(i);
    sheet.x += w + 1;
    sheet.shelf = Math.max(sheet.shelf, h);
    sheet.width = Math.max(sheet.width, sheet.x);
  }
  for (const sh of sheets) {
    const width = Math.max(1, sh.width);
    const height = Math.max(1, sh.y + sh.shelf);
    const image = new ImageData(width, height);
    const px = new Uint32Array(image.data.buffer);
    for (const i of sh.members) {
      const { w, h, bits, colour } = items[i];
      const { sx, sy } = placed[i];
      for (let r = 0; r < h; r += 1) {
        const src = r * w;
        const dst = (sy + r) * width + sx;
        for (let c = 0; c < w; c += 1) if (bits[src + c]) px[dst + c] = colour;
      }
    }
    sh.canvas = document.createElement("canvas");
    sh.canvas.width = width;
    sh.canvas.height = height;
    sh.canvas.getContext("2d").putImageData(image, 0, 0);
  }
  return placed.map((p) => (p ? { canvas: p.sheet.canvas, sx: p.sx, sy: p.sy } : null));
}

export class Overlay {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.masks = [];
    this.fills = [];
    this.outlines = null;
    this.outlineThickness = 0;
  }

  /** Take decoded masks (entries may be null for empty masks) for a `width`×`height` tile. */
  load(masks, width, height) {
    this.masks = masks;
    this.fills = this.pack((m) => m.bits);
    this.outlines = null;
    this.outlineThickness = 0;
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
  }

  /** Outline width in tile pixels for a display scale (about 1.5 screen pixels). */
  setScale(scale) {
    const thickness = Math.max(1, Math.round(1.5 / Math.max(scale, 1e-3)));
    if (thickness !== this.outlineThickness) {
      this.outlineThickness = thickness;
      this.outlines = null;
      return true;
    }
    return false;
  }

  /** Sprites of every mask, from `bitsOf(mask)`, in the mask's colour. */
  pack(bitsOf) {
    const items = [];
    const index = [];
    this.masks.forEach((m, i) => {
      if (!m) return;
      index.push(i);
      items.push({ w: m.w, h: m.h, bits: bitsOf(m), colour: rgbaWord(maskColour(i).rgb, 255) });
    });
    const sprites = new Array(this.masks.length).fill(null);
    packSprites(items).forEach((sprite, k) => { sprites[index[k]] = sprite; });
    return sprites;
  }

  blit(sprite, i) {
    const m = this.masks[i];
    this.ctx.drawImage(sprite.canvas, sprite.sx, sprite.sy, m.w, m.h, m.x0, m.y0, m.w, m.h);
  }

  outline(i) {
    if (!this.outlines) {
      const scratch = new Int32Array(this.masks.reduce((n, m) => Math.max(n, m ? Math.max(m.w, m.h) : 0), 1));
      this.outlines = this.pack((m) => outlineBits(m, this.outlineThickness || 1, scratch));
    }
    return this.outlines[i];
  }

  /**
   * Redraw. opts: {visible: iterable of mask indices, opacity: fill opacity 0..1, outlineOnly,
   * focus: index|null (drawn alone), faint: iterable of indices drawn as dim outlines only (e.g. masks
   * no phrase links to while fixing)}. Outlines are always opaque so boundaries stay readable.
   */
  draw({ visible, opacity = 0.45, outlineOnly = false, focus = null, faint = [] }) {
    const ctx = this.ctx;
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    const present = (i) => i !== null && i >= 0 && i < this.masks.length && this.masks[i];
    if (present(focus)) {
      ctx.globalAlpha = Math.max(opacity, 0.5);
      this.blit(this.fills[focus], focus);
      ctx.globalAlpha = 1;
      this.blit(this.outline(focus), focus);
      return;
    }
    ctx.globalAlpha = 0.5;
    for (const i of faint) if (present(i)) this.blit(this.outline(i), i);
    const order = [...visible].filter(present);
    // Large masks first so that small ones on top stay visible.
    order.sort((a, b) => this.masks[b].area - this.masks[a].area);
    if (!outlineOnly && opacity > 0) {
      ctx.globalAlpha = opacity;
      for (const i of order) this.blit(this.fills[i], i);
    }
    ctx.globalAlpha = 1;
    for (const i of order) this.blit(this.outline(i), i);
  }

  /** The smallest of `candidates` containing tile pixel (x, y), or null. */
  hit(x, y, candidates) {
    let best = null;
    let bestArea = Infinity;
    const px = Math.floor(x);
    const py = Math.floor(y);
    for (const i of candidates) {
      const m = this.masks[i];
      if (!m || px < m.x0 || py < m.y0 || px >= m.x0 + m.w || py >= m.y0 + m.h) continue;
      if (m.bits[(py - m.y0) * m.w + (px - m.x0)] && m.area < bestArea) {
        best = i;
        bestArea = m.area;
      }
    }
    return best;
  }
}
