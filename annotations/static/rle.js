// COCO run-length masks, decoded in the browser.
//
// The server sends each mask as it is stored (`{size: [h, w], counts: "<compressed string>"}`), a few
// hundred bytes per object even on 4096² tiles. Decoding touches only the runs and the foreground
// pixels, never the whole tile, and keeps each mask as a bitmap cropped to its bounding box.

/** Decode pycocotools' compressed `counts` string into run lengths (same algorithm as rleFrString). */
export function decodeCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0;
    let k = 0;
    let more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p += 1;
      k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

/**
 * Decode one RLE into a cropped mask.
 * Returns {x0, y0, w, h, bits: Uint8Array(w*h) row-major, area, labelX, labelY} in tile pixels,
 * or null for an empty mask. Runs are column-major (COCO), so a run may span several columns.
 */
export function decodeMask(rle) {
  const H = rle.size[0];
  const counts = typeof rle.counts === "string" ? decodeCounts(rle.counts) : rle.counts;
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -1;
  let maxY = -1;
  let pos = 0;
  for (let i = 0; i < counts.length; i += 1) {
    const n = counts[i];
    if (i & 1 && n > 0) {
      const c0 = Math.floor(pos / H);
      const c1 = Math.floor((pos + n - 1) / H);
      if (c0 < minX) minX = c0;
      if (c1 > maxX) maxX = c1;
      if (c0 === c1) {
        const r0 = pos - c0 * H;
        if (r0 < minY) minY = r0;
        if (r0 + n - 1 > maxY) maxY = r0 + n - 1;
      } else {
        minY = 0;
        maxY = H - 1;
      }
    }
    pos += n;
  }
  if (maxX < 0) return null;
  const w = maxX - minX + 1;
  const h = maxY - minY + 1;
  const bits = new Uint8Array(w * h);
  let area = 0;
  let sumX = 0;
  let sumY = 0;
  pos = 0;
  for (let i = 0; i < counts.length; i += 1) {
    const n = counts[i];
    if (i & 1) {
      let start = pos;
      let left = n;
      while (left > 0) {
        const c = Math.floor(start / H);
        const r = start - c * H;
        const len = Math.min(left, H - r);
        let idx = (r - minY) * w + (c - minX);
        for (let k = 0; k < len; k += 1) {
          bits[idx] = 1;
          idx += w;
        }
        area += len;
        sumX += c * len;
        sumY += (r + (len - 1) / 2) * len;
        start += len;
        left -= len;
      }
    }
    pos += n;
  }
  const [labelX, labelY] = labelPoint(bits, w, h, sumX / area - minX, sumY / area - minY);
  return { x0: minX, y0: minY, w, h, bits, area, labelX: labelX + minX, labelY: labelY + minY };
}

/** A pixel inside the mask near its centroid (the centroid itself is outside concave shapes). */
function labelPoint(bits, w, h, cx, cy) {
  const x = Math.min(w - 1, Math.max(0, Math.round(cx)));
  const y = Math.min(h - 1, Math.max(0, Math.round(cy)));
  if (bits[y * w + x]) return [x + 0.5, y + 0.5];
  for (let radius = 1; radius < Math.max(w, h); radius += 1) {
    for (let dy = -radius; dy <= radius; dy += 1) {
      const yy = y + dy;
      if (yy < 0 || yy >= h) continue;
      const step = Math.abs(dy) === radius ? 1 : 2 * radius;
      for (let dx = -radius; dx <= radius; dx += step) {
        const xx = x + dx;
        if (xx >= 0 && xx < w && bits[yy * w + xx]) return [xx + 0.5, yy + 0.5];
      }
    }
  }
  return [x + 0.5, y + 0.5];
}

/**
 * The border of a cropped mask, `thickness` pixels wide (pixels of the mask within `thickness` of a
 * pixel outside it): the mask minus its erosion by a square, done as two 1-D passes, O(w*h).
 * `scratch` is an optional reusable Int32Array of at least max(w, h) entries.
 */
export function outlineBits(mask, thickness, scratch = null) {
  const { w, h, bits } = mask;
  const t = Math.max(1, thickness | 0);
  if (w <= 2 * t || h <= 2 * t) return bits; // nothing survives erosion: the whole mask is border
  const buffer = scratch && scratch.length >= Math.max(w, h) ? scratch : new Int32Array(Math.max(w, h));
  const rows = new Uint8Array(w * h);
  erode1d(bits, rows, w, h, t, 1, w, buffer);
  const eroded = new Uint8Array(w * h);
  erode1d(rows, eroded, h, w, t, w, 1, buffer);
  for (let i = 0; i < eroded.length; i += 1) eroded[i] = bits[i] & (eroded[i] ^ 1);
  return eroded;
}

// 1-D erosion of `lines` lines of `len` pixels (pixel k of line l at l * lineStep + k * step): a pixel
// survives when the pixels within `t` on both sides along the line are set (outside counts as unset).
function erode1d(src, out, len, lines, t, step, lineStep, run) {
  for (let line = 0; line < lines; line += 1) {
    const base = line * lineStep;
    let count = 0;
    for (let k = 0; k < len; k += 1) {
      count = src[base + k * step] ? count + 1 : 0;
      run[k] = count; // set pixels ending at k
    }
    // k survives if the run ending at k + t covers k - t .. k + t.
    for (let k = t; k < len - t; k += 1) if (run[k + t] > 2 * t) out[base + k * step] = 1;
  }
}

/** Run lengths -> pycocotools' compressed `counts` string (same algorithm as rleToString). */
export function encodeCounts(counts) {
  let s = "";
  for (let i = 0; i < counts.length; i += 1) {
    let x = counts[i];
    if (i > 2) x -= counts[i - 2];
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x >>= 5; // arithmetic shift, as in C for a negative long
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      s += String.fromCharCode(c + 48);
    }
  }
  return s;
}

/**
 * A full-tile bitmap (Uint8Array(h*w), row-major, 1 = inside) -> COCO compressed RLE
 * {size: [h, w], counts}. Runs are column-major and start with background, as pycocotools writes them.
 */
export function encodeMask(bits, h, w) {
  const counts = [];
  let value = 0;
  let run = 0;
  for (let x = 0; x < w; x += 1) {
    for (let y = 0; y < h; y += 1) {
      const v = bits[y * w + x] ? 1 : 0;
      if (v !== value) {
        counts.push(run);
        run = 0;
        value = v;
      }
      run += 1;
    }
  }
  counts.push(run);
  return { size: [h, w], counts: encodeCounts(counts) };
}

/** A decoded (cropped) mask from decodeMask painted into a full-tile bitmap; null gives an empty one. */
export function fullBits(decoded, h, w) {
  const bits = new Uint8Array(h * w);
  if (!decoded) return bits;
  for (let r = 0; r < decoded.h; r += 1) {
    const src = r * decoded.w;
    const dst = (decoded.y0 + r) * w + decoded.x0;
    for (let c = 0; c < decoded.w; c += 1) if (decoded.bits[src + c]) bits[dst + c] = 1;
  }
  return bits;
}
