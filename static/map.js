// SAE explorer map: a small WebGL point renderer (gl.POINTS), pan/zoom, CPU picking on a grid,
// lasso selection, cluster labels, legend filtering, a ring on the hovered (or tapped) point, and view
// state kept in the query string.
import { drawHeat, url } from './app.js';
import { categoryFn, countCategories, hiddenMask, parseOnly, toggleCategory } from './map-filter.js';

const root = document.getElementById('explorer');
const saeId = root.dataset.sae;
const canvas = document.getElementById('map');
const labelsEl = document.getElementById('labels');
const hoverEl = document.getElementById('hover');
const statusEl = document.getElementById('map-status');
const lassoSvg = document.getElementById('lasso');
const lassoPoly = lassoSvg.querySelector('polygon');
const mapSelect = document.getElementById('map-select');
const colorSelect = document.getElementById('color-select');
const lassoBtn = document.getElementById('lasso-btn');
const selList = document.getElementById('sel-list');
const selCount = document.getElementById('sel-count');
const samplePanel = document.getElementById('sample-panel');
const legendEl = document.getElementById('legend');
const zoomCtl = document.querySelector('.map-zoom');

// Cluster colours: 24 hand-picked qualitative colours (category10 first, then picks that stay apart from
// each other and from the noise grey in OKLab), then generated hues stepped by the golden angle in OKLCH
// with three lightness levels for any further cluster. One function feeds points, legend and labels.
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#bcbd22',
  '#17becf', '#393b79', '#e7298a', '#637939', '#ff9da7', '#a1caf1', '#8ca252', '#7b4173', '#a6761d', '#654522',
  '#b3446c', '#d6616b', '#5254a3', '#b07aa1', '#f6a600', '#1b9e77']
  .map((h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)));
const NOISE = [170, 170, 170];
const GOLDEN_ANGLE = 137.50776405003785;
const generated = new Map();

function oklchToRgb(L, C, hueDeg) {
  const h = (hueDeg * Math.PI) / 180;
  const enc = (v) => Math.round(255 * (v <= 0.0031308 ? 12.92 * v : 1.055 * v ** (1 / 2.4) - 0.055));
  for (let c = C; c > 0; c -= 0.005) { // reduce chroma until the colour fits in sRGB
    const a = c * Math.cos(h), b = c * Math.sin(h);
    const l = (L + 0.3963377774 * a + 0.2158037573 * b) ** 3;
    const m = (L - 0.1055613458 * a - 0.0638541728 * b) ** 3;
    const s = (L - 0.0894841775 * a - 1.291485548 * b) ** 3;
    const rgb = [4.0767416621 * l - 3.3077115913 * m + 0.2309699292 * s,
      -1.2684380046 * l + 2.6097574011 * m - 0.3413193965 * s,
      -0.0041960863 * l - 0.7034186147 * m + 1.707614701 * s];
    if (rgb.every((v) => v >= 0 && v <= 1)) return rgb.map(enc);
  }
  return NOISE;
}

export function clusterColor(id) {
  id = Number(id);
  if (!Number.isInteger(id) || id < 0) return NOISE; // -1: noise / unclustered
  if (id < PALETTE.length) return PALETTE[id];
  if (!generated.has(id)) {
    const k = id - PALETTE.length;
    generated.set(id, oklchToRgb([0.62, 0.48, 0.76][k % 3], 0.15, (30 + k * GOLDEN_ANGLE) % 360));
  }
  return generated.get(id);
}
const rgbCss = (c) => `rgb(${c.join(',')})`;

const ZOOM_MIN = 0.2, ZOOM_MAX = 5000;
const ZOOM_BUTTON_STEP = 1.5, ZOOM_KEY_STEP = 1.25;
const LEGEND_TOP = 8;
const clampZoom = (z) => Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, z));
const MAX_LABELS = 28;
const MAX_LIST = 200;

// ---------- binary columns ----------
export function parsePoints(buf) {
  const dv = new DataView(buf);
  const hlen = dv.getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, hlen)));
  const base = 4 + hlen;
  const types = { float32: Float32Array, int16: Int16Array, int32: Int32Array, uint8: Uint8Array,
    int64: BigInt64Array, float64: Float64Array };
  const cols = {};
  for (const c of header.columns) cols[c.name] = new types[c.dtype](buf, base + c.offset, header.n);
  return { header, cols, n: header.n };
}

// ---------- state in the query string ----------
// Everything read from the URL is validated: unknown values fall back to the defaults.
function readState() {
  const p = new URLSearchParams(location.search);
  const num = (k) => {
    const s = (p.get(k) || '').trim();
    if (!/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(s)) return null;
    const v = Number(s);
    return Number.isFinite(v) ? v : null;
  };
  const z = num('z');
  const sample = (p.get('sample') || '').trim();
  return {
    map: p.get('map') === 'samples' ? 'samples' : 'features',
    color: ['cluster', 'density', 'max_act', 'entropy'].includes(p.get('color')) ? p.get('color') : 'cluster',
    x: num('x'), y: num('y'), // checked against the data extent once the points are loaded
    z: z !== null && z > 0 ? clampZoom(z) : null, // zero, negative: default; huge or tiny: the wheel's range
    sel: parseRanges(p.get('sel') || ''),
    sample: /^\d{1,15}$/.test(sample) ? Number(sample) : null,
    feature: /^\d{1,10}$/.test((p.get('feature') || '').trim()) ? Number(p.get('feature').trim()) : null, // samples map coloured by it
    only: parseOnly(p.get('only')), // legend filter: the categories shown (empty: all)
  };
}

function parseRanges(s) {
  const out = [];
  for (const part of s.split(',')) {
    const m = part.trim().match(/^(\d{1,15})(?:-(\d{1,15}))?$/);
    if (!m) continue;
    const a = +m[1], b = m[2] ? +m[2] : a;
    for (let i = a; i <= b && out.length < 100000; i++) out.push(i);
  }
  return out;
}

function toRanges(ids) {
  const s = [...ids].sort((a, b) => a - b);
  const parts = [];
  for (let i = 0; i < s.length; i++) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j] + 1) j++;
    parts.push(i === j ? `${s[i]}` : `${s[i]}-${s[j]}`);
    i = j;
  }
  return parts.join(',');
}

let urlTimer = null;
function writeState() {
  clearTimeout(urlTimer);
  urlTimer = setTimeout(() => {
    const p = new URLSearchParams();
    p.set('map', state.map);
    p.set('color', state.color);
    p.set('x', view.cx.toPrecision(6));
    p.set('y', view.cy.toPrecision(6));
    p.set('z', view.zoom.toPrecision(4));
    const sel = toRanges(selectedIds());
    if (sel && sel.length < 1800) p.set('sel', sel);
    if (state.sample !== null && state.map === 'samples') p.set('sample', state.sample);
    if (state.feature !== null && state.map === 'samples') p.set('feature', state.feature);
    if (state.only.size) p.set('only', [...state.only].join(','));
    history.replaceState(null, '', `${location.pathname}?${p}`);
  }, 120);
}

// ---------- WebGL ----------
// asel: bit 0 selected, bit 1 hidden by the legend filter (drawn nowhere). `ring` redraws one point
// (the hovered or tapped one) larger, opaque, inside a dark ring.
const VS = `
attribute float ax; attribute float ay; attribute vec4 acolor; attribute float asel;
uniform vec2 center; uniform vec2 scale; uniform float psize; uniform float anysel; uniform float ring;
varying vec4 vcolor; varying float vring;
void main() {
  float hidden = step(1.5, asel);
  float sel = asel - 2.0 * hidden;
  gl_Position = hidden > 0.5 ? vec4(2.0, 2.0, 2.0, 1.0) : vec4((ax - center.x) * scale.x, (ay - center.y) * scale.y, 0.0, 1.0);
  gl_PointSize = hidden > 0.5 ? 0.0 : ring > 0.5 ? psize * 2.2 + 8.0 : sel > 0.5 ? psize * 1.8 : psize;
  vcolor = ring > 0.5 ? vec4(acolor.rgb, 1.0) : (anysel > 0.5 && sel < 0.5) ? vec4(acolor.rgb, 0.25) : acolor;
  vring = ring;
}`;
const FS = `
precision mediump float;
varying vec4 vcolor; varying float vring;
void main() {
  vec2 d = gl_PointCoord - vec2(0.5);
  float r2 = dot(d, d);
  if (r2 > 0.25) discard;
  if (vring > 0.5 && r2 > 0.11) { gl_FragColor = vec4(0.07, 0.07, 0.07, 1.0); return; }
  gl_FragColor = vec4(vcolor.rgb * vcolor.a, vcolor.a);
}`;

function makeGL() {
  const gl = canvas.getContext('webgl', { preserveDrawingBuffer: true, antialias: false, premultipliedAlpha: true });
  if (!gl) return null;
  const sh = (type, src) => {
    const s = gl.createShader(type);
    gl.shaderSource(s, src);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    return s;
  };
  const prog = gl.createProgram();
  gl.attachShader(prog, sh(gl.VERTEX_SHADER, VS));
  gl.attachShader(prog, sh(gl.FRAGMENT_SHADER, FS));
  gl.linkProgram(prog);
  gl.useProgram(prog);
  const loc = (n) => gl.getAttribLocation(prog, n);
  const uni = (n) => gl.getUniformLocation(prog, n);
  return {
    gl, prog,
    attrs: { ax: loc('ax'), ay: loc('ay'), acolor: loc('acolor'), asel: loc('asel') },
    unis: { center: uni('center'), scale: uni('scale'), psize: uni('psize'), anysel: uni('anysel'), ring: uni('ring') },
    bufs: { x: gl.createBuffer(), y: gl.createBuffer(), color: gl.createBuffer(), sel: gl.createBuffer() },
  };
}

function upload(buf, data) {
  const gl = R.gl;
  gl.bindBuffer(gl.ARRAY_BUFFER, buf);
  gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
}

function bindAttr(name, buf, size, type, norm) {
  const gl = R.gl;
  gl.bindBuffer(gl.ARRAY_BUFFER, buf);
  gl.enableVertexAttribArray(R.attrs[name]);
  gl.vertexAttribPointer(R.attrs[name], size, type, norm, 0, 0);
}

// ---------- data + view ----------
const state = readState();
const R = makeGL();
let pts = null; // {n, cols, header, ids}
let grid = null;
let selected = new Uint8Array(0);
let nSelected = 0;
let hidden = new Uint8Array(0); // 1: hidden by the legend filter
let ringIdx = -1; // the point drawn with a ring: hovered (mouse) or tapped (touch)
const view = { cx: 0, cy: 0, zoom: 1, fit: 1 };
const cache = { features: null, samples: null };
const cards = new Map();

function idOf(i) { return pts.cols.id ? Number(pts.cols.id[i]) : i; }
function selectedIds() {
  const out = [];
  if (!pts) return out;
  for (let i = 0; i < pts.n; i++) if (selected[i]) out.push(idOf(i));
  return out;
}

function bbox(x, y, n) {
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i < n; i++) {
    const a = x[i], b = y[i];
    if (!(a === a && b === b)) continue; // NaN
    if (a < x0) x0 = a; if (a > x1) x1 = a; if (b < y0) y0 = b; if (b > y1) y1 = b;
  }
  if (x0 === Infinity) return [0, 1, 0, 1];
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  return [x0, x1, y0, y1];
}

// Uniform grid over the data for nearest-point picking and fast lasso pre-filtering.
function buildGrid(x, y, n, bb) {
  const G = Math.max(8, Math.min(1024, Math.round(Math.sqrt(n / 4))));
  const [x0, x1, y0, y1] = bb;
  const sx = G / (x1 - x0), sy = G / (y1 - y0);
  const cellOf = new Int32Array(n);
  const counts = new Int32Array(G * G + 1); // last slot: points with NaN coordinates
  for (let i = 0; i < n; i++) {
    const cx = Math.min(G - 1, Math.max(0, Math.floor((x[i] - x0) * sx)));
    const cy = Math.min(G - 1, Math.max(0, Math.floor((y[i] - y0) * sy)));
    const c = (x[i] === x[i] && y[i] === y[i]) ? cy * G + cx : G * G;
    cellOf[i] = c;
    counts[c]++;
  }
  const start = new Int32Array(G * G + 1);
  for (let c = 0; c < G * G; c++) start[c + 1] = start[c] + counts[c];
  const fill = start.slice();
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) if (cellOf[i] < G * G) order[fill[cellOf[i]]++] = i;
  return { G, x0, y0, sx, sy, start, order };
}

function nearest(dx, dy, radius) {
  if (!grid) return -1;
  const { G, x0, y0, sx, sy, start, order } = grid;
  const { x, y } = pts.cols;
  const cx0 = Math.max(0, Math.floor((dx - radius - x0) * sx)), cx1 = Math.min(G - 1, Math.floor((dx + radius - x0) * sx));
  const cy0 = Math.max(0, Math.floor((dy - radius - y0) * sy)), cy1 = Math.min(G - 1, Math.floor((dy + radius - y0) * sy));
  let best = -1, bestD = radius * radius;
  for (let cy = cy0; cy <= cy1; cy++) {
    for (let cx = cx0; cx <= cx1; cx++) {
      const c = cy * G + cx;
      for (let k = start[c]; k < start[c + 1]; k++) {
        const i = order[k];
        if (hidden[i]) continue; // filtered out: not drawn, so not pickable
        const d = (x[i] - dx) ** 2 + (y[i] - dy) ** 2;
        if (d <= bestD) { bestD = d; best = i; }
      }
    }
  }
  return best;
}

function size() {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * dpr)), h = Math.max(1, Math.round(canvas.clientHeight * dpr));
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  return { w, h, dpr };
}

function ppu() { // device pixels per data unit
  const { w, h } = size();
  return view.zoom * view.fit * Math.min(w, h);
}

export function toScreen(dx, dy) { // CSS pixels relative to the canvas
  const { w, h, dpr } = size();
  const k = ppu();
  return [(w / 2 + (dx - view.cx) * k) / dpr, (h / 2 - (dy - view.cy) * k) / dpr];
}

function toData(sx, sy) {
  const { w, h, dpr } = size();
  const k = ppu();
  return [view.cx + (sx * dpr - w / 2) / k, view.cy - (sy * dpr - h / 2) / k];
}

function ramp(t) { // viridis-like
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const s = Math.min(0.9999, Math.max(0, t)) * (stops.length - 1);
  const i = Math.floor(s), f = s - i;
  return stops[i].map((v, j) => Math.round(v + (stops[i + 1][j] - v) * f));
}

// The samples map is coloured by one feature's activation when the URL names it (`feature=N`).
function colorKey() {
  if (state.map === 'features') return state.color;
  return state.feature !== null && pts.act && pts.act.feature === state.feature ? 'act' : 'cluster';
}

async function loadFeatureActivations() {
  if (state.map !== 'samples' || state.feature === null || (pts.act && pts.act.feature === state.feature)) return;
  const res = await fetch(url('activations', { sae_id: saeId, feature_id: state.feature }));
  if (!res.ok) { statusEl.textContent = `feature ${state.feature}: no activations (${res.status})`; return; }
  const a = parsePoints(await res.arrayBuffer());
  if (a.n !== pts.n) return;
  pts.cols.act = a.cols.act;
  pts.act = { feature: state.feature, spec: a.header.columns[0], nValued: a.header.n_valued };
}

function colors() {
  const n = pts.n;
  const out = new Uint8Array(n * 4);
  const key = colorKey();
  const q = pts.cols[key];
  const cl = pts.cols.cluster;
  for (let i = 0; i < n; i++) {
    let c;
    if (key === 'cluster' || !q) {
      c = clusterColor(cl ? cl[i] : 0);
    } else {
      c = q[i] === 0 ? NOISE : ramp((q[i] - 1) / 254);
    }
    out[i * 4] = c[0]; out[i * 4 + 1] = c[1]; out[i * 4 + 2] = c[2]; out[i * 4 + 3] = 235;
  }
  return out;
}

function draw() {
  if (!R || !pts) return;
  const gl = R.gl;
  const { w, h, dpr } = size();
  gl.viewport(0, 0, w, h);
  gl.clearColor(1, 1, 1, 1);
  gl.clear(gl.COLOR_BUFFER_BIT);
  gl.enable(gl.BLEND);
  gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
  const k = ppu();
  gl.uniform2f(R.unis.center, view.cx, view.cy);
  gl.uniform2f(R.unis.scale, (2 * k) / w, (2 * k) / h);
  const n = pts.n;
  const base = n < 1000 ? 9 : n < 5000 ? 7 : n < 20000 ? 5 : n < 200000 ? 3 : 2;
  gl.uniform1f(R.unis.psize, Math.min(48, base * Math.min(4, Math.sqrt(view.zoom))) * dpr);
  gl.uniform1f(R.unis.anysel, nSelected > 0 ? 1 : 0);
  gl.uniform1f(R.unis.ring, 0);
  gl.drawArrays(gl.POINTS, 0, n);
  if (ringIdx >= 0 && ringIdx < n && !hidden[ringIdx]) { // on top of everything else
    gl.uniform1f(R.unis.ring, 1);
    gl.drawArrays(gl.POINTS, ringIdx, 1);
    gl.uniform1f(R.unis.ring, 0);
  }
  drawLabels();
}

let rafPending = false;
function redraw() {
  if (rafPending) return;
  rafPending = true;
  requestAnimationFrame(() => { rafPending = false; clampView(); draw(); writeState(); });
}

// Cluster labels, largest clusters first, skipping any that would overlap one already placed.
// Fewer labels at low zoom (more as you zoom in), so names never pile up into an unreadable heap.
const clusterCache = {};
function clusterList(which) {
  if (!clusterCache[which]) clusterCache[which] = JSON.parse(document.getElementById(`clusters-${which}`).textContent || '[]');
  return clusterCache[which];
}

export function placeLabels(clusters, project, W, H, zoom, reserved = []) {
  const budget = Math.min(MAX_LABELS, Math.round(8 + 10 * Math.log2(Math.max(1, zoom)) + (W * H) / 60000));
  const boxes = reserved.map((b) => [...b]); // areas labels must keep clear of (the zoom buttons)
  const out = [];
  for (const c of clusters) {
    if (out.length >= budget) break;
    if (!c.name) continue;
    let [sx, sy] = project(c.x, c.y);
    if (!(sx >= 0 && sy >= 0 && sx <= W && sy <= H)) continue; // centroid off screen
    const w = Math.min(224, 7.5 * c.name.length + 12), h = 18;
    if (w > W - 4 || h > H - 4) continue;
    sx = Math.min(W - 2 - w / 2, Math.max(2 + w / 2, sx)); // keep the whole label inside the map
    sy = Math.min(H - 2 - h / 2, Math.max(2 + h / 2, sy));
    const b = [sx - w / 2, sy - h / 2, sx + w / 2, sy + h / 2];
    if (boxes.some((o) => b[0] < o[2] + 4 && b[2] + 4 > o[0] && b[1] < o[3] + 2 && b[3] + 2 > o[1])) continue;
    boxes.push(b);
    out.push({ c, sx, sy });
  }
  return out;
}

function drawLabels() {
  labelsEl.replaceChildren();
  const W = canvas.clientWidth, H = canvas.clientHeight;
  const cr = canvas.getBoundingClientRect(), zr = zoomCtl.getBoundingClientRect();
  const reserved = zr.width ? [[zr.left - cr.left, zr.top - cr.top, zr.right - cr.left, zr.bottom - cr.top]] : [];
  const filtered = state.only.size && colorKey() === 'cluster'; // no label over clusters the legend hid
  const clusters = filtered ? clusterList(state.map).filter((c) => state.only.has(String(c.cluster_id))) : clusterList(state.map);
  const placed = placeLabels(clusters, toScreen, W, H, view.zoom, reserved);
  for (const { c, sx, sy } of placed) {
    const span = document.createElement('span');
    span.textContent = c.name; // textContent: names are data, never HTML
    span.title = c.name;
    if (state.map !== 'features' || state.color === 'cluster') span.style.borderLeft = `3px solid ${rgbCss(clusterColor(c.cluster_id))}`;
    span.style.left = `${sx}px`;
    span.style.top = `${sy}px`;
    labelsEl.appendChild(span);
  }
  labelsEl.dataset.n = String(placed.length);
}

// ---------- colour legend ----------
const COLOR_NAMES = { density: 'density (log10 fraction of samples)', max_act: 'max activation', entropy: 'label entropy' };
function fmtTick(v, log10) {
  if (!Number.isFinite(v)) return '–';
  if (log10) {
    const p = 10 ** v * 100;
    return p >= 1 ? `${p.toPrecision(2)}%` : `${p.toPrecision(1)}%`;
  }
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(2);
}

let legendOpen = false;
const ACT_COLOUR = ramp(0.75); // the legend swatch for "has a value" on a ramp

// The categories of the colouring in use (see map-filter.js), one per point.
function catOf() {
  const key = colorKey();
  return categoryFn(key, pts.cols.cluster, key === 'cluster' ? null : pts.cols[key]);
}

// Points per category, counted once per map and colouring (~0.1 s for a million points), not per click.
const countsCache = new Map();
function categoryCounts() {
  const k = `${state.map}|${colorKey()}|${pts.act ? pts.act.feature : ''}`;
  if (!countsCache.has(k)) countsCache.set(k, countCategories(pts.n, catOf()));
  return countsCache.get(k);
}

// A legend entry is a toggle: it filters the map to its category (Shift/Ctrl-click: several).
function legendItem(cat, colour, text, count, extra = {}) {
  const on = state.only.has(cat);
  const item = el('button', { type: 'button', class: `legend-item${state.only.size && !on ? ' off' : ''}`, 'data-cat': cat,
    'aria-pressed': String(on), title: `${text}: show only these (Shift- or Ctrl-click to add more)`, ...extra });
  item.appendChild(el('i', { style: `background: ${rgbCss(colour)}` }));
  item.appendChild(el('span', { class: 'legend-name' }, text)); // textContent: names are data, never HTML
  item.appendChild(el('span', { class: 'legend-n' }, count.toLocaleString()));
  return item;
}

function rampLegend(key, spec, counts) {
  legendEl.appendChild(el('div', { class: 'legend-title' }, key === 'act' ? `feature #${pts.act.feature} activation` : (COLOR_NAMES[key] || key)));
  const row = el('div', { class: 'legend-ramp' });
  row.appendChild(el('span', {}, fmtTick(spec.min, spec.log10)));
  row.appendChild(el('span', { class: 'ramp-bar', 'aria-hidden': 'true' }));
  row.appendChild(el('span', {}, fmtTick(spec.max, spec.log10)));
  legendEl.appendChild(row);
  const [yes, no] = key === 'act' ? ['among its strongest features', 'not among its strongest features']
    : spec.log10 ? ['fires', 'never fires'] : ['has a value', 'no value'];
  legendEl.appendChild(legendItem('valued', ACT_COLOUR, yes, counts.get('valued') || 0));
  legendEl.appendChild(legendItem('none', NOISE, no, counts.get('none') || 0));
}

// The largest clusters, and a toggle that lists them all in a scrollable box (opened by itself
// when the filter shows a cluster beyond the first few).
function clusterLegend(counts) {
  const cl = clusterList(state.map);
  const more = cl.length > LEGEND_TOP;
  const open = legendOpen || cl.slice(LEGEND_TOP).some((c) => state.only.has(String(c.cluster_id)));
  const title = !cl.length ? 'clusters' : !more ? `clusters (${cl.length})`
    : open ? `clusters (all ${cl.length}, largest first)` : `clusters (largest ${LEGEND_TOP} of ${cl.length})`;
  legendEl.appendChild(el('div', { class: 'legend-title' }, title));
  const list = el('div', { class: `legend-items${more && open ? ' open' : ''}`, id: 'legend-items' });
  for (const c of open ? cl : cl.slice(0, LEGEND_TOP)) {
    const id = String(c.cluster_id);
    list.appendChild(legendItem(id, clusterColor(c.cluster_id), c.name || `cluster ${id}`, counts.get(id) || 0, { 'data-cluster': id }));
  }
  legendEl.appendChild(list);
  legendEl.appendChild(legendItem('-1', NOISE, 'no cluster', counts.get('-1') || 0, { 'data-cluster': '-1' }));
  if (more) {
    const btn = el('button', { type: 'button', class: 'legend-more', 'aria-expanded': String(open),
      'aria-controls': 'legend-items' }, open ? 'show fewer' : `+${cl.length - LEGEND_TOP} more`);
    btn.addEventListener('click', () => {
      legendOpen = !open;
      renderLegend();
      legendEl.querySelector('.legend-more')?.focus();
    });
    legendEl.appendChild(btn);
  }
}

function renderLegend() {
  legendEl.replaceChildren();
  if (!pts) return;
  const key = colorKey();
  const spec = key === 'act' ? pts.act.spec : pts.header.columns.find((c) => c.name === key);
  const counts = categoryCounts();
  if (key !== 'cluster' && spec) rampLegend(key, spec, counts);
  else clusterLegend(counts);
  if (state.only.size) {
    let shown = 0;
    for (const c of state.only) shown += counts.get(c) || 0;
    const row = el('div', { class: 'legend-filter', role: 'status' }, `showing ${shown.toLocaleString()} of ${pts.n.toLocaleString()} points `);
    const all = el('button', { type: 'button', class: 'legend-all' }, 'show all');
    all.addEventListener('click', () => setFilter(new Set()));
    row.appendChild(all);
    legendEl.appendChild(row);
  }
}

// Hide the points outside the filter (and the ring, if its point is one of them), then redraw.
function applyFilter() {
  if (!pts) return;
  hidden = hiddenMask(pts.n, catOf(), state.only);
  if (ringIdx >= 0 && hidden[ringIdx]) { ringIdx = -1; hoverIdx = -1; hoverEl.hidden = true; }
  uploadSel();
  renderLegend();
  redraw();
}

function setFilter(only) {
  state.only = only;
  applyFilter();
}

legendEl.addEventListener('click', (e) => {
  const item = e.target.closest('[data-cat]');
  if (!item || !pts) return;
  const cat = item.dataset.cat;
  setFilter(toggleCategory(state.only, cat, e.shiftKey || e.ctrlKey || e.metaKey));
  legendEl.querySelector(`[data-cat="${CSS.escape(cat)}"]`)?.focus(); // the legend was redrawn: keep the focus
});

async function loadMap(which) {
  const t0 = performance.now();
  statusEl.textContent = 'loading…';
  if (!cache[which]) {
    const res = await fetch(which === 'features' ? root.dataset.featuresBin : root.dataset.samplesBin);
    if (!res.ok) { statusEl.textContent = `could not load points (${res.status})`; return; }
    const p = parsePoints(await res.arrayBuffer());
    p.bb = bbox(p.cols.x, p.cols.y, p.n);
    p.grid = buildGrid(p.cols.x, p.cols.y, p.n, p.bb);
    cache[which] = p;
  }
  pts = cache[which];
  grid = pts.grid;
  await loadFeatureActivations();
  const [x0, x1, y0, y1] = pts.bb;
  view.fit = 0.92 / Math.max(x1 - x0, y1 - y0);
  if (R) {
    upload(R.bufs.x, pts.cols.x); bindAttr('ax', R.bufs.x, 1, R.gl.FLOAT, false);
    upload(R.bufs.y, pts.cols.y); bindAttr('ay', R.bufs.y, 1, R.gl.FLOAT, false);
    upload(R.bufs.color, colors()); bindAttr('acolor', R.bufs.color, 4, R.gl.UNSIGNED_BYTE, true);
  }
  selected = new Uint8Array(pts.n);
  nSelected = 0;
  ringIdx = -1;
  hidden = hiddenMask(pts.n, catOf(), state.only);
  uploadSel();
  renderLegend();
  draw();
  if (R) R.gl.finish(); // wait for the GPU
  const ms = performance.now() - t0;
  root.dataset.loadMs = ms.toFixed(1);
  root.dataset.ready = which;
  root.dataset.n = String(pts.n);
  statusEl.textContent = R ? `${pts.n.toLocaleString()} points · ${ms.toFixed(0)} ms` : 'WebGL is not available in this browser';
}

function resetView() {
  if (!pts) return;
  const [x0, x1, y0, y1] = pts.bb;
  view.cx = (x0 + x1) / 2; view.cy = (y0 + y1) / 2; view.zoom = 1;
}

// The centre may lie at most two data extents beyond the data's bounding box (so some points stay reachable).
function centreRange() {
  const [x0, x1, y0, y1] = pts.bb;
  const m = 2 * Math.max(x1 - x0, y1 - y0);
  return [x0 - m, x1 + m, y0 - m, y1 + m];
}

function clampView() {
  if (!pts) return;
  const [a0, a1, b0, b1] = centreRange();
  if (!Number.isFinite(view.zoom) || view.zoom <= 0) view.zoom = 1;
  view.zoom = clampZoom(view.zoom);
  if (!Number.isFinite(view.cx)) view.cx = (a0 + a1) / 2;
  if (!Number.isFinite(view.cy)) view.cy = (b0 + b1) / 2;
  view.cx = Math.min(a1, Math.max(a0, view.cx));
  view.cy = Math.min(b1, Math.max(b0, view.cy));
}

// Zoom by `factor`, keeping the data point under (sx, sy) (CSS px on the canvas; default: its centre) in place.
function zoomAt(factor, sx = canvas.clientWidth / 2, sy = canvas.clientHeight / 2) {
  if (!pts) return;
  const [dx, dy] = toData(sx, sy);
  view.zoom = clampZoom(view.zoom * factor);
  const [nx, ny] = toData(sx, sy);
  view.cx += dx - nx; view.cy += dy - ny;
  redraw();
}

function uploadSel() {
  if (!R) return;
  const flags = new Uint8Array(selected.length);
  for (let i = 0; i < flags.length; i++) flags[i] = selected[i] | (hidden[i] ? 2 : 0);
  upload(R.bufs.sel, flags);
  bindAttr('asel', R.bufs.sel, 1, R.gl.UNSIGNED_BYTE, false);
}

function setSelection(indices) {
  selected = new Uint8Array(pts.n);
  for (const i of indices) selected[i] = 1;
  nSelected = indices.length;
  uploadSel();
  redraw();
  renderSelection(indices);
}

const MAX_TABLE_IDS_CHARS = 12000; // the feature table's `ids` parameter limit

// The whole selection (not only the listed part) opens in the feature table as id ranges; a selection
// too scattered for one link says so instead of being cut.
function tableLink(indices) {
  const li = document.createElement('li');
  li.className = 'sel-table';
  const ranges = toRanges(indices.map(idOf));
  if (ranges.length > MAX_TABLE_IDS_CHARS) {
    li.textContent = `${indices.length.toLocaleString()} features in too many separate ranges for one link; select fewer`;
    return li;
  }
  const a = document.createElement('a');
  a.href = `${url('features', { sae_id: saeId })}?ids=${ranges}`; // ranges: digits, '-' and ',' only
  a.textContent = `open all ${indices.length.toLocaleString()} in the feature table`;
  li.appendChild(a);
  return li;
}

async function renderSelection(indices) {
  selCount.textContent = indices.length ? `(${indices.length.toLocaleString()})` : '';
  const hint = document.getElementById('sel-hint');
  if (hint) hint.hidden = indices.length > 0;
  selList.replaceChildren();
  const ids = indices.slice(0, MAX_LIST).map(idOf);
  if (!ids.length) return;
  if (state.map === 'features') {
    selList.appendChild(tableLink(indices));
    const res = await fetch(`${url('features_json', { sae_id: saeId })}?limit=${MAX_LIST}&ids=${toRanges(ids)}`);
    if (!res.ok) return;
    const body = await res.json();
    for (const f of body.data) {
      const li = document.createElement('li');
      const a = document.createElement('a');
      a.href = f.url;
      a.textContent = `#${f.feature_id} ${f.title}`;
      li.appendChild(a);
      selList.appendChild(li);
    }
  } else {
    for (const id of ids) {
      const li = document.createElement('li');
      const a = document.createElement('a');
      a.href = url('sample', { sae_id: saeId, sample_id: id });
      a.textContent = `sample ${id}`;
      li.appendChild(a);
      selList.appendChild(li);
    }
  }
  if (indices.length > MAX_LIST) {
    const li = document.createElement('li');
    li.textContent = `… and ${(indices.length - MAX_LIST).toLocaleString()} more`;
    selList.appendChild(li);
  }
}

function lassoSelect(poly) {
  if (poly.length < 3) return;
  const dpoly = poly.map(([sx, sy]) => toData(sx, sy));
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const [a, b] of dpoly) { x0 = Math.min(x0, a); x1 = Math.max(x1, a); y0 = Math.min(y0, b); y1 = Math.max(y1, b); }
  const { x, y } = pts.cols;
  const hits = [];
  for (let i = 0; i < pts.n; i++) {
    const px = x[i], py = y[i];
    if (hidden[i] || px < x0 || px > x1 || py < y0 || py > y1) continue;
    let inside = false;
    for (let a = 0, b = dpoly.length - 1; a < dpoly.length; b = a++) {
      const [ax, ay] = dpoly[a], [bx, by] = dpoly[b];
      if ((ay > py) !== (by > py) && px < ((bx - ax) * (py - ay)) / (by - ay) + ax) inside = !inside;
    }
    if (inside) hits.push(i);
  }
  setSelection(hits);
}

// ---------- hover and click ----------
function el(tag, attrs = {}, text = null) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== null) e.textContent = text;
  return e;
}

async function card(i) {
  const id = idOf(i);
  const key = `${state.map}:${id}`;
  if (!cards.has(key)) {
    const addr = state.map === 'features'
      ? url('feature_card', { sae_id: saeId, feature_id: id })
      : url('sample_json', { sae_id: saeId, sample_id: id });
    cards.set(key, fetch(addr).then((r) => (r.ok ? r.json() : null)));
  }
  return cards.get(key);
}

let hoverIdx = -1;
async function showHover(i, sx, sy) {
  hoverIdx = i;
  if (i < 0) { hoverEl.hidden = true; return; }
  const data = await card(i);
  if (hoverIdx !== i || !data) return;
  hoverEl.replaceChildren();
  if (state.map === 'features') {
    hoverEl.appendChild(el('strong', {}, `#${data.feature_id} ${data.title}`));
    hoverEl.appendChild(el('div', {}, `density ${(100 * (data.density || 0)).toFixed(3)}% · max ${fmt(data.max_act)}`));
    const row = el('div');
    for (const t of data.top) {
      if (t.thumb_url) row.appendChild(el('img', { src: t.thumb_url, alt: t.caption || t.label || `sample ${t.sample_id}` }));
      else row.appendChild(el('div', { class: 'text-sample' }, t.caption || ''));
    }
    hoverEl.appendChild(row);
  } else {
    const s = data.sample;
    hoverEl.appendChild(el('strong', {}, `sample ${s.sample_id}`));
    if (s.thumb_url) hoverEl.appendChild(el('img', { src: s.thumb_url, alt: s.caption || s.label || '' }));
    hoverEl.appendChild(el('div', {}, s.caption || s.label || ''));
  }
  hoverEl.style.left = `${Math.min(sx + 14, canvas.clientWidth - 270)}px`;
  hoverEl.hidden = false;
  const below = sy + 14 + hoverEl.offsetHeight < canvas.clientHeight;
  hoverEl.style.top = `${below ? sy + 14 : Math.max(0, sy - 14 - hoverEl.offsetHeight)}px`;
}

function fmt(v) { return v === null || v === undefined ? '–' : Number(v).toPrecision(3); }

async function openSample(id) {
  state.sample = id;
  writeState();
  const res = await fetch(url('sample_json', { sae_id: saeId, sample_id: id }));
  if (!res.ok) { state.sample = null; writeState(); return; }
  const v = await res.json();
  samplePanel.replaceChildren();
  samplePanel.appendChild(el('h2', {}, `Sample ${v.sample.sample_id}`));
  if (v.sample.thumb_url) samplePanel.appendChild(el('img', { class: 'big', src: v.sample.thumb_url, alt: v.sample.caption || v.sample.label || '' }));
  if (v.sample.caption) samplePanel.appendChild(el('p', {}, v.sample.caption));
  const ol = el('ol', { class: 'sample-features' });
  for (const f of v.features) {
    const li = el('li');
    if (f.heatmap && v.sample.thumb_url && v.sae.is_patch) {
      const wrap = el('span', { class: 'thumb-wrap small' });
      wrap.appendChild(el('img', { src: v.sample.thumb_url, alt: `heatmap of feature ${f.feature_id}` }));
      const c = el('canvas', { class: 'heat', width: v.sae.grid_w, height: v.sae.grid_h, 'data-heat': JSON.stringify(f.heatmap) });
      wrap.appendChild(c);
      li.appendChild(wrap);
      drawHeat(c);
    }
    li.appendChild(el('a', { href: f.url }, `#${f.feature_id} ${f.title}`));
    li.appendChild(el('span', { class: 'act' }, ` ${fmt(f.activation)}`));
    ol.appendChild(li);
  }
  samplePanel.appendChild(ol);
  samplePanel.appendChild(el('a', { href: url('sample', { sae_id: saeId, sample_id: id }) }, 'open sample page'));
  samplePanel.hidden = false;
}

function pickAt(sx, sy) {
  const [dx, dy] = toData(sx, sy);
  const radius = (10 * (window.devicePixelRatio || 1)) / ppu();
  return nearest(dx, dy, radius);
}

// ---------- interaction ----------
// Pointers are tracked by pointerId: one pointer pans (or draws the lasso), two pinch-zoom and pan together.
const pointers = new Map(); // pointerId -> [x, y] in CSS px on the canvas
let drag = null;
let pinch = null;
let lassoMode = false;

function localXY(e) {
  const r = canvas.getBoundingClientRect();
  return [e.clientX - r.left, e.clientY - r.top];
}

function twoPointers() {
  const [a, b] = [...pointers.values()];
  return { mid: [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2], dist: Math.max(1, Math.hypot(a[0] - b[0], a[1] - b[1])) };
}

function startPinch() {
  if (drag && drag.lasso) lassoPoly.setAttribute('points', '');
  drag = null;
  const { mid, dist } = twoPointers();
  pinch = { dist, zoom: view.zoom, anchor: toData(mid[0], mid[1]) };
  hoverIdx = -1;
  hoverEl.hidden = true;
}

function movePinch() {
  const { mid, dist } = twoPointers();
  view.zoom = clampZoom(pinch.zoom * (dist / pinch.dist));
  const [nx, ny] = toData(mid[0], mid[1]); // keep the data point that was under the fingers under them
  view.cx += pinch.anchor[0] - nx; view.cy += pinch.anchor[1] - ny;
  redraw();
}

canvas.addEventListener('pointerdown', (e) => {
  try { canvas.setPointerCapture(e.pointerId); } catch { /* not an active pointer (synthetic event) */ }
  if (e.isPrimary) { pointers.clear(); pinch = null; } // a new gesture: forget pointers whose end we missed
  const [x, y] = localXY(e);
  pointers.set(e.pointerId, [x, y]);
  if (!pts) return;
  if (pointers.size === 2) { startPinch(); return; }
  if (pointers.size > 2) return;
  const lasso = lassoMode || e.shiftKey;
  drag = { id: e.pointerId, x, y, cx: view.cx, cy: view.cy, moved: false, lasso, poly: lasso ? [[x, y]] : null };
});
canvas.addEventListener('pointermove', (e) => {
  if (!pts) return;
  const [x, y] = localXY(e);
  if (pointers.has(e.pointerId)) pointers.set(e.pointerId, [x, y]);
  if (pinch) { if (pointers.size >= 2) movePinch(); return; }
  if (drag) {
    if (e.pointerId !== drag.id) return;
    const ddx = x - drag.x, ddy = y - drag.y;
    if (Math.abs(ddx) + Math.abs(ddy) > 3) drag.moved = true;
    if (drag.lasso) {
      drag.poly.push([x, y]);
      lassoPoly.setAttribute('points', drag.poly.map((p) => p.join(',')).join(' '));
    } else {
      const k = ppu() / (window.devicePixelRatio || 1);
      view.cx = drag.cx - ddx / k; view.cy = drag.cy + ddy / k;
      redraw();
    }
    return;
  }
  if (e.pointerType === 'touch') return;
  const i = pickAt(x, y);
  canvas.style.cursor = i >= 0 ? 'pointer' : 'crosshair';
  setRing(i);
  showHover(i, x, y);
});
function setRing(i) {
  if (ringIdx === i) return;
  ringIdx = i;
  redraw();
}
function pointerEnd(e) {
  if (!pointers.delete(e.pointerId)) return;
  if (pinch) {
    if (pointers.size >= 2) { startPinch(); return; } // a third finger lifted: go on with the other two
    pinch = null;
    if (pointers.size === 1) { // one finger left: it pans from here, and lifting it is no click
      const [[id, [x, y]]] = [...pointers];
      drag = { id, x, y, cx: view.cx, cy: view.cy, moved: true, lasso: false, poly: null };
    }
    return;
  }
  if (!drag || drag.id !== e.pointerId) return;
  const d = drag;
  drag = null;
  if (d.lasso) {
    lassoPoly.setAttribute('points', '');
    if (d.moved && e.type === 'pointerup') lassoSelect(d.poly);
    return;
  }
  if (e.type !== 'pointerup') { // the browser took the touch to scroll the page: undo the start of the pan
    view.cx = d.cx; view.cy = d.cy;
    redraw();
    return;
  }
  if (d.moved) return;
  const [x, y] = localXY(e);
  const i = pickAt(x, y);
  if (i < 0) { setRing(-1); hoverIdx = -1; hoverEl.hidden = true; if (nSelected) setSelection([]); return; }
  if (e.pointerType !== 'mouse' && state.map === 'features' && ringIdx !== i) { // touch has no hover: the first
    setRing(i); // tap rings the point and shows its card, a second tap on it opens it
    showHover(i, x, y);
    return;
  }
  setRing(i);
  if (state.map === 'features') window.location.href = url('feature', { sae_id: saeId, feature_id: idOf(i) });
  else openSample(idOf(i));
}
canvas.addEventListener('pointerup', pointerEnd);
canvas.addEventListener('pointercancel', pointerEnd); // e.g. the browser took the touch to scroll the page
canvas.addEventListener('pointerleave', (e) => { // a finger leaves after every tap: its ring stays
  if (e.pointerType === 'touch') return;
  hoverIdx = -1; hoverEl.hidden = true; setRing(-1);
});
// On phones one finger scrolls the page over the map (touch-action in app.css); two fingers belong to the map.
const twoFingers = (e) => { if (e.touches.length > 1 && e.cancelable) e.preventDefault(); };
canvas.addEventListener('touchstart', twoFingers, { passive: false });
canvas.addEventListener('touchmove', twoFingers, { passive: false });
canvas.addEventListener('wheel', (e) => {
  e.preventDefault();
  const [x, y] = localXY(e);
  zoomAt(Math.exp(-e.deltaY * 0.0015), x, y);
}, { passive: false });
canvas.addEventListener('keydown', (e) => {
  const step = 60 / (ppu() / (window.devicePixelRatio || 1));
  const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
  if (moves[e.key]) { view.cx += moves[e.key][0]; view.cy += moves[e.key][1]; }
  else if (e.key === '+' || e.key === '=') view.zoom = clampZoom(view.zoom * ZOOM_KEY_STEP);
  else if (e.key === '-') view.zoom = clampZoom(view.zoom / ZOOM_KEY_STEP);
  else if (e.key === '0') resetView();
  else return;
  e.preventDefault();
  redraw();
});
document.getElementById('zoom-in').addEventListener('click', () => zoomAt(ZOOM_BUTTON_STEP));
document.getElementById('zoom-out').addEventListener('click', () => zoomAt(1 / ZOOM_BUTTON_STEP));
document.getElementById('zoom-reset').addEventListener('click', () => { resetView(); redraw(); });
lassoBtn.addEventListener('click', () => {
  lassoMode = !lassoMode;
  lassoBtn.setAttribute('aria-pressed', String(lassoMode));
  canvas.classList.toggle('lasso-on', lassoMode); // on phones a one-finger drag then draws instead of scrolling
});
document.getElementById('reset-btn').addEventListener('click', () => { resetView(); setSelection([]); });
colorSelect.addEventListener('change', () => {
  state.color = colorSelect.value;
  state.only = new Set(); // the categories belong to the colouring
  if (R && pts) { upload(R.bufs.color, colors()); bindAttr('acolor', R.bufs.color, 4, R.gl.UNSIGNED_BYTE, true); }
  applyFilter();
});
mapSelect.addEventListener('change', async () => {
  state.map = mapSelect.value;
  state.sample = null;
  state.only = new Set();
  samplePanel.hidden = true;
  colorSelect.disabled = state.map !== 'features';
  await loadMap(state.map);
  resetView();
  renderSelection([]);
  redraw();
});
new ResizeObserver(() => redraw()).observe(canvas);

// Test hook: where a point is on screen, so browser tests can click it.
window.saescopeMap = {
  screenOf: (i) => toScreen(pts.cols.x[i], pts.cols.y[i]),
  idOf: (i) => idOf(i),
  clusterOf: (i) => (pts.cols.cluster ? pts.cols.cluster[i] : 0),
  clusterColor: (id) => [...clusterColor(id)],
  view: () => ({ ...view }),
  zoomRange: () => [ZOOM_MIN, ZOOM_MAX],
  zoomStep: ZOOM_BUTTON_STEP,
  selected: () => selectedIds(),
  ring: () => ringIdx,
  only: () => [...state.only].sort(),
  nHidden: () => hidden.reduce((a, b) => a + b, 0),
  categoryOf: (i) => catOf()(i),
};

// ---------- start ----------
(async () => {
  mapSelect.value = state.map;
  colorSelect.value = state.color;
  colorSelect.disabled = state.map !== 'features';
  await loadMap(state.map);
  if (!pts) { root.dataset.restored = 'true'; return; }
  resetView();
  const [a0, a1, b0, b1] = centreRange(); // a centre from the URL must lie near the data
  if (state.z !== null) view.zoom = state.z;
  if (state.x !== null && state.x >= a0 && state.x <= a1) view.cx = state.x;
  if (state.y !== null && state.y >= b0 && state.y <= b1) view.cy = state.y;
  if (state.only.size) { // a filter from the URL keeps only categories this map has
    const counts = categoryCounts();
    setFilter(new Set([...state.only].filter((c) => counts.has(c))));
  }
  if (state.sel.length) {
    const want = new Set(state.sel);
    const idx = [];
    for (let i = 0; i < pts.n; i++) if (want.has(idOf(i))) idx.push(i);
    setSelection(idx);
  }
  draw();
  if (state.sample !== null && state.map === 'samples') {
    let known = false; // only samples on this map can have been opened from it
    for (let i = 0; i < pts.n && !known; i++) known = idOf(i) === state.sample;
    if (known) openSample(state.sample);
    else { state.sample = null; writeState(); }
  }
  root.dataset.restored = 'true';
})();
