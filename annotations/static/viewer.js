// Pan and zoom of the tile stage (image + mask canvas + labels) with a CSS transform.
//
// The stage is laid out at the tile's own pixel size and scaled by the compositor, so zooming and
// panning never redraw the masks. Wheel zooms around the cursor, dragging pans; a press that does not
// move is reported as a click.

export class Viewer {
  constructor(viewport, stage, { onScale = () => {}, onClick = () => {} } = {}) {
    this.viewport = viewport;
    this.stage = stage;
    this.onScale = onScale;
    this.onClick = onClick;
    this.width = 1;
    this.height = 1;
    this.scale = 1;
    this.tx = 0;
    this.ty = 0;
    this.fitted = true;
    this.drag = null;
    viewport.addEventListener("wheel", (e) => this.wheel(e), { passive: false });
    viewport.addEventListener("pointerdown", (e) => this.down(e));
    viewport.addEventListener("pointermove", (e) => this.move(e));
    viewport.addEventListener("pointerup", (e) => this.up(e));
    viewport.addEventListener("pointercancel", () => { this.drag = null; });
    // The viewport size is cached from the observer, so fitting a new tile never forces a layout.
    this.vw = viewport.clientWidth || 1;
    this.vh = viewport.clientHeight || 1;
    new ResizeObserver((entries) => {
      const box = entries[entries.length - 1].contentRect;
      this.vw = box.width || 1;
      this.vh = box.height || 1;
      if (this.fitted) this.fit();
    }).observe(viewport);
  }

  setSize(width, height) {
    this.width = width;
    this.height = height;
    this.stage.style.width = `${width}px`;
    this.stage.style.height = `${height}px`;
    this.fit();
  }

  fit() {
    const { vw, vh } = this;
    const scale = Math.min(vw / this.width, vh / this.height);
    this.scale = scale;
    this.tx = (vw - this.width * scale) / 2;
    this.ty = (vh - this.height * scale) / 2;
    this.fitted = true;
    this.apply();
  }

  /** Zoom by `factor` keeping viewport point (cx, cy) fixed. */
  zoomAt(factor, cx, cy) {
    const { vw, vh } = this;
    const fitScale = Math.min(vw / this.width, vh / this.height);
    const scale = Math.min(Math.max(this.scale * factor, fitScale * 0.5), 32);
    const k = scale / this.scale;
    this.tx = cx - (cx - this.tx) * k;
    this.ty = cy - (cy - this.ty) * k;
    this.scale = scale;
    this.fitted = false;
    this.apply();
  }

  /** Pan so that tile point (x, y) is in the middle of the viewport, if it is not visible now. */
  reveal(x, y) {
    const { vw, vh } = this;
    const sx = this.tx + x * this.scale;
    const sy = this.ty + y * this.scale;
    if (sx >= 0 && sx <= vw && sy >= 0 && sy <= vh) return;
    this.tx = vw / 2 - x * this.scale;
    this.ty = vh / 2 - y * this.scale;
    this.fitted = false;
    this.apply();
  }

  zoomCentre(factor) {
    this.zoomAt(factor, this.vw / 2, this.vh / 2);
  }

  apply() {
    this.stage.style.transform = `translate(${this.tx}px, ${this.ty}px) scale(${this.scale})`;
    this.stage.style.setProperty("--inv-scale", String(1 / this.scale));
    this.stage.classList.toggle("pixelated", this.scale >= 2);
    this.onScale(this.scale);
  }

  /** Tile pixel coordinates of a pointer event. */
  toTile(event) {
    const rect = this.viewport.getBoundingClientRect();
    return {
      x: (event.clientX - rect.left - this.tx) / this.scale,
      y: (event.clientY - rect.top - this.ty) / this.scale,
    };
  }

  wheel(event) {
    event.preventDefault();
    const rect = this.viewport.getBoundingClientRect();
    this.zoomAt(Math.exp(-event.deltaY * 0.0015), event.clientX - rect.left, event.clientY - rect.top);
  }

  down(event) {
    if (event.button !== 0) return;
    this.drag = { x: event.clientX, y: event.clientY, tx: this.tx, ty: this.ty, moved: false };
    this.viewport.setPointerCapture(event.pointerId);
  }

  move(event) {
    if (!this.drag) return;
    const dx = event.clientX - this.drag.x;
    const dy = event.clientY - this.drag.y;
    if (!this.drag.moved && Math.hypot(dx, dy) < 4) return;
    this.drag.moved = true;
    this.tx = this.drag.tx + dx;
    this.ty = this.drag.ty + dy;
    this.fitted = false;
    this.viewport.classList.add("panning");
    this.apply();
  }

  up(event) {
    const drag = this.drag;
    this.drag = null;
    this.viewport.classList.remove("panning");
    if (drag && !drag.moved) this.onClick(this.toTile(event));
  }
}
