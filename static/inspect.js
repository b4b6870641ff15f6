// Live inspection and steering: upload/paste/drop an image (or pick a sample, or type text), rank the
// SAE features that fire, show each one's patch heatmap, rank a clicked or boxed region, and steer.
// State that can be shared (sample, region, shown heatmap, edits) lives in the URL.
import { heatColor, url } from './app.js';

const root = document.querySelector('[data-inspect]');
const $ = (sel) => root.querySelector(sel);
const saeId = root.dataset.sae;
const gridH = parseInt(root.dataset.gridH, 10) || 0;
const gridW = parseInt(root.dataset.gridW, 10) || 0;
const maxBytes = parseFloat(root.dataset.maxMb) * 1048576;
const params = new URLSearchParams(location.search);

const state = {
  input: null,           // {kind: 'image', blob} | {kind: 'sample', sampleId} | {kind: 'text', text}
  result: null,          // the inspect.json response
  shown: params.has('heat') ? parseInt(params.get('heat'), 10) : null,
  region: parseCells(params.get('region')),
  edits: parseEdits(params.get('edits')),
  steerRegion: params.get('steer_region') === '1',
  imgUrl: null,
  expanded: new Set(),   // SAE lists shown in full
  titles: new Map(),     // feature id -> title, for edits of features that do not fire on the input
};
const LIST_FIRST = 12;

function parseCells(text) {
  if (!text) return null;
  const cells = text.split(',').map((s) => parseInt(s, 10)).filter((n) => Number.isInteger(n) && n >= 0 && n < gridH * gridW);
  return cells.length ? cells : null;
}

function parseEdits(text) {
  if (!text) return [];
  return text.split(',').map((part) => {
    const [fid, op, value] = part.split(':');
    return { feature_id: parseInt(fid, 10), op: op === 'set' ? 'set' : 'add', value: parseFloat(value) };
  }).filter((e) => Number.isInteger(e.feature_id) && Number.isFinite(e.value));
}

function syncUrl() {
  const p = new URLSearchParams();
  if (state.input && state.input.kind === 'sample') p.set('sample_id', state.input.sampleId);
  if (state.region) p.set('region', state.region.join(','));
  if (state.shown !== null) p.set('heat', state.shown);
  if (state.edits.length) p.set('edits', state.edits.map((e) => `${e.feature_id}:${e.op}:${+e.value.toFixed(2)}`).join(','));
  if (state.steerRegion) p.set('steer_region', '1');
  const also = [...root.querySelectorAll('[data-also]:checked')].map((c) => c.value);
  if (also.length) p.set('with', also.join(','));
  history.replaceState(null, '', `${location.pathname}${p.toString() ? '?' + p : ''}`);
}

function showError(message) {
  const el = $('[data-error]');
  el.textContent = message || '';
  el.hidden = !message;
}

async function post(path, form) {
  const r = await fetch(path, { method: 'POST', body: form, headers: { Accept: 'application/json' } });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) throw new Error((body && (body.message || body.detail)) || `HTTP ${r.status}`);
  return body;
}

function inputForm() {
  const f = new FormData();
  const i = state.input;
  if (i.kind === 'image') f.append('image', i.blob, i.blob.name || 'upload');
  else if (i.kind === 'sample') f.append('sample_id', i.sampleId);
  else f.append('text', i.text);
  return f;
}

async function inspect() {
  showError('');
  const form = inputForm();
  form.append('limit', '200');
  const also = [...root.querySelectorAll('[data-also]:checked')].map((c) => c.value);
  if (also.length) form.append('with', also.join(','));
  root.classList.add('busy');
  const status = $('[data-live-status]');
  const before = status.textContent;
  status.textContent = 'Running the model on this input… (the first request also loads it)';
  try {
    state.result = await post(url('inspect_json', { sae_id: saeId }), form);
    status.textContent = before.startsWith('live worker') ? before : 'live worker ready';
    status.className = 'live-status ok';
  } catch (e) {
    showError(e.message);
    return;
  } finally {
    root.classList.remove('busy');
  }
  if (state.input.kind === 'sample' && state.result.input.sample) state.imgUrl = state.result.input.sample.thumb_url;
  const main = state.result.results[0];
  if (state.shown === null || !main.features.some((f) => f.feature_id === state.shown)) {
    state.shown = main.grid && main.features.length ? main.features[0].feature_id : null;
  }
  render();
  syncUrl();
  if (state.edits.length) steer();
}

// ---- ranking (client-side, from the sparse code the worker returned) ----------------------
function ranked(result, region) {
  if (!region) return result.features;
  const keep = new Set(region);
  const best = new Map();
  const e = result.entries;
  for (let i = 0; i < e.token.length; i++) {
    if (!keep.has(e.token[i])) continue;
    const cur = best.get(e.feature[i]);
    if (!cur || e.value[i] > cur.activation) best.set(e.feature[i], { activation: e.value[i], token: e.token[i] });
  }
  const byId = new Map(result.features.map((f) => [f.feature_id, f]));
  return [...best.entries()]
    .map(([fid, b]) => ({ ...(byId.get(fid) || { feature_id: fid, title: `feature ${fid}`, url: url('feature', { sae_id: saeId, feature_id: fid }), thumbs: [] }), activation: b.activation, token: b.token,
      relative: byId.get(fid) && byId.get(fid).max_act ? b.activation / byId.get(fid).max_act : null }))
    .sort((a, b) => b.activation - a.activation || a.feature_id - b.feature_id);
}

function heatmapOf(result, fid) {
  const n = result.n_tokens;
  const out = new Array(n).fill(0);
  const e = result.entries;
  for (let i = 0; i < e.token.length; i++) if (e.feature[i] === fid) out[e.token[i]] = e.value[i];
  return out;
}

// ---- rendering ----------------------------------------------------------------------------
function fmt(v) { return v === null || v === undefined ? '–' : (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2)); }

function featureItem(f, result, isMain) {
  const li = document.createElement('li');
  li.dataset.feature = f.feature_id;
  if (isMain && result.grid) {
    const b = document.createElement('button');
    b.type = 'button'; b.className = 'show-heat'; b.textContent = '◧';
    b.title = `show feature ${f.feature_id}'s heatmap on the image`;
    b.setAttribute('aria-pressed', String(state.shown === f.feature_id));
    b.addEventListener('click', () => { state.shown = f.feature_id; drawOverlay(); markShown(); syncUrl(); });
    li.append(b);
  }
  const a = document.createElement('a');
  a.href = f.url; a.className = 'fname';
  a.innerHTML = '<span class="fid"></span> <span class="t"></span>';
  a.querySelector('.fid').textContent = `#${f.feature_id}`;
  a.querySelector('.t').textContent = f.title;
  li.append(a);
  const act = document.createElement('span');
  act.className = 'act';
  act.textContent = fmt(f.activation);
  act.title = 'activation (max over the input\'s patches)';
  li.append(act);
  const rel = document.createElement('span');
  rel.className = 'rel';
  rel.textContent = f.relative === null || f.relative === undefined ? '' : `${Math.round(100 * f.relative)}% of max`;
  rel.title = 'activation relative to the feature\'s maximum over the indexed dataset';
  li.append(rel);
  const mini = document.createElement('span');
  mini.className = 'mini';
  for (const t of (f.thumbs || []).slice(0, 3)) {
    if (!t.thumb_url) continue;
    const im = document.createElement('img');
    im.src = t.thumb_url; im.alt = t.caption || t.label || `sample ${t.sample_id}`; im.width = 36; im.height = 36; im.loading = 'lazy';
    mini.append(im);
  }
  li.append(mini);
  if (isMain) {
    const s = document.createElement('button');
    s.type = 'button'; s.className = 'add-steer'; s.textContent = '+';
    s.title = `steer feature ${f.feature_id}`;
    s.addEventListener('click', () => addEdit(f.feature_id));
    li.append(s);
  }
  return li;
}

function renderList(result, isMain) {
  const box = document.createElement('section');
  box.className = 'flist';
  const h = document.createElement('h2');
  const feats = isMain ? ranked(result, state.region) : result.features;
  h.textContent = `${result.sae.title}`;
  const sub = document.createElement('p');
  sub.className = 'hint';
  sub.textContent = isMain && state.region
    ? `${feats.length} features fire in the selected ${state.region.length} patch${state.region.length > 1 ? 'es' : ''} (of ${result.n_firing} on the whole input)`
    : `${result.n_firing} features fire on this input${result.grid ? ` (score: max over ${result.n_tokens} patches)` : ''}`;
  const ol = document.createElement('ol');
  ol.className = 'live-features';
  ol.dataset.liveFeatures = result.sae.sae_id;
  const shown = state.expanded.has(result.sae.sae_id) ? feats.length : Math.min(feats.length, LIST_FIRST);
  feats.slice(0, shown).forEach((f) => ol.append(featureItem(f, result, isMain)));
  box.append(h, sub, ol);
  if (shown < feats.length) {
    const more = document.createElement('button');
    more.type = 'button'; more.className = 'more';
    const total = isMain && state.region ? feats.length : result.n_firing;
    more.textContent = total > feats.length ? `Show the top ${feats.length} of ${total}` : `Show all ${feats.length}`;
    more.addEventListener('click', () => { state.expanded.add(result.sae.sae_id); refreshLists(); });
    box.append(more);
  }
  return box;
}

function render() {
  $('[data-result]').hidden = false;
  $('[data-steer]').hidden = false;
  const img = $('[data-input-img]');
  const stage = $('[data-stage]');
  stage.hidden = state.input.kind === 'text';
  if (state.imgUrl && img.src !== state.imgUrl) {
    img.src = state.imgUrl;
    img.onload = drawOverlay;
  }
  const lists = $('[data-lists]');
  lists.replaceChildren(...state.result.results.map((r, i) => renderList(r, i === 0)));
  drawOverlay();
  markShown();
  renderEdits();
}

function markShown() {
  root.querySelectorAll('.show-heat').forEach((b) => {
    b.setAttribute('aria-pressed', String(parseInt(b.closest('li').dataset.feature, 10) === state.shown));
  });
}

function drawOverlay() {
  const canvas = $('[data-overlay]');
  const img = $('[data-input-img]');
  const main = state.result && state.result.results[0];
  if (!main) return;
  const W = img.clientWidth || 320, H = img.clientHeight || 320;
  canvas.width = W; canvas.height = H;
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, W, H);
  const legend = $('[data-legend]');
  if (!main.grid) { legend.hidden = true; return; }
  const [gh, gw] = main.grid;
  const cw = W / gw, ch = H / gh;
  const scale = main.features.length ? main.features[0].activation : 1;
  if (state.shown !== null) {
    const vals = heatmapOf(main, state.shown);
    vals.forEach((v, i) => {
      const [r, g, b, a] = heatColor(Math.max(0, Math.min(1, v / scale)));
      ctx.fillStyle = `rgba(${r},${g},${b},${a / 255})`;
      ctx.fillRect((i % gw) * cw, Math.floor(i / gw) * ch, cw, ch);
    });
    legend.hidden = false;
    $('[data-legend-max]').textContent = fmt(scale);
  }
  ctx.strokeStyle = 'rgba(0,0,0,.18)';
  ctx.lineWidth = 1;
  for (let x = 1; x < gw; x++) { ctx.beginPath(); ctx.moveTo(x * cw, 0); ctx.lineTo(x * cw, H); ctx.stroke(); }
  for (let y = 1; y < gh; y++) { ctx.beginPath(); ctx.moveTo(0, y * ch); ctx.lineTo(W, y * ch); ctx.stroke(); }
  if (state.region) {
    ctx.strokeStyle = '#0b5cad';
    ctx.lineWidth = 3;
    for (const c of state.region) ctx.strokeRect((c % gw) * cw + 1.5, Math.floor(c / gw) * ch + 1.5, cw - 3, ch - 3);
  }
}

// ---- region selection: click a patch, or drag a box -----------------------------------------
function cellAt(ev) {
  const canvas = $('[data-overlay]');
  const rect = canvas.getBoundingClientRect();
  const x = Math.min(gridW - 1, Math.max(0, Math.floor((ev.clientX - rect.left) / rect.width * gridW)));
  const y = Math.min(gridH - 1, Math.max(0, Math.floor((ev.clientY - rect.top) / rect.height * gridH)));
  return [x, y];
}

function setupRegion() {
  const canvas = $('[data-overlay]');
  if (!gridH) return;
  let start = null;
  canvas.addEventListener('pointerdown', (ev) => { start = cellAt(ev); canvas.setPointerCapture(ev.pointerId); });
  canvas.addEventListener('pointerup', (ev) => {
    if (!start) return;
    const end = cellAt(ev);
    const cells = [];
    for (let y = Math.min(start[1], end[1]); y <= Math.max(start[1], end[1]); y++) {
      for (let x = Math.min(start[0], end[0]); x <= Math.max(start[0], end[0]); x++) cells.push(y * gridW + x);
    }
    start = null;
    state.region = cells;
    refreshLists();
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && state.region) { state.region = null; refreshLists(); }
  });
}

function refreshLists() {
  if (!state.result) return;
  const lists = $('[data-lists]');
  lists.replaceChildren(...state.result.results.map((r, i) => renderList(r, i === 0)));
  drawOverlay();
  markShown();
  syncUrl();
  if (state.steerRegion && state.edits.length) steer();
}

// ---- inputs -------------------------------------------------------------------------------
function takeFile(file) {
  if (!file) return;
  if (file.size > maxBytes) { showError(`the file is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${root.dataset.maxMb} MB`); return; }
  if (state.imgUrl && state.imgUrl.startsWith('blob:')) URL.revokeObjectURL(state.imgUrl);
  state.input = { kind: 'image', blob: file };
  state.imgUrl = URL.createObjectURL(file);
  state.region = null;
  inspect();
}

function setupInputs() {
  const zone = $('[data-dropzone]');
  const file = $('[data-file]');
  if (file) file.addEventListener('change', () => takeFile(file.files[0]));
  if (zone) {
    zone.addEventListener('dragover', (ev) => { ev.preventDefault(); zone.classList.add('over'); });
    zone.addEventListener('dragleave', () => zone.classList.remove('over'));
    zone.addEventListener('drop', (ev) => { ev.preventDefault(); zone.classList.remove('over'); takeFile(ev.dataTransfer.files[0]); });
    zone.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); file.click(); } });
    document.addEventListener('paste', (ev) => {
      const item = [...(ev.clipboardData || {}).items || []].find((i) => i.type.startsWith('image/'));
      if (item) takeFile(item.getAsFile());
    });
  }
  $('[data-sample-form]').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = $('[data-sample-form] input').value;
    if (v === '') return;
    state.input = { kind: 'sample', sampleId: parseInt(v, 10) };
    state.region = null;
    inspect();
  });
  const tf = $('[data-text-form]');
  if (tf) tf.addEventListener('submit', (ev) => { ev.preventDefault(); state.input = { kind: 'text', text: tf.querySelector('textarea').value }; inspect(); });
  root.querySelectorAll('[data-also]').forEach((c) => {
    c.checked = (params.get('with') || '').split(',').includes(c.value);
    c.addEventListener('change', () => { if (state.input) inspect(); else syncUrl(); });
  });
}

// ---- steering -----------------------------------------------------------------------------
function titleOf(fid) {
  const f = state.result && state.result.results[0].features.find((x) => x.feature_id === fid);
  return f ? f.title : (state.titles.get(fid) || `feature ${fid}`);
}

function addEdit(fid) {
  if (!state.edits.some((e) => e.feature_id === fid)) state.edits.push({ feature_id: fid, op: 'add', value: 2 });
  renderEdits();
  steer();
}

function renderEdits() {
  const ol = $('[data-edits]');
  ol.replaceChildren(...state.edits.map((e, i) => {
    const li = document.createElement('li');
    li.dataset.edit = e.feature_id;
    const label = document.createElement('a');
    label.href = url('feature', { sae_id: saeId, feature_id: e.feature_id });
    label.textContent = `#${e.feature_id} ${titleOf(e.feature_id)}`;
    const slider = document.createElement('input');
    slider.type = 'range'; slider.min = '-10'; slider.max = '10'; slider.step = '0.1';
    slider.value = e.op === 'set' ? 0 : e.value;
    slider.disabled = e.op === 'set';
    slider.setAttribute('aria-label', `add to feature ${e.feature_id}, in units of its max activation`);
    const out = document.createElement('output');
    out.textContent = e.op === 'set' ? `set ${e.value}` : `${e.value >= 0 ? '+' : ''}${e.value.toFixed(1)}× max`;
    slider.addEventListener('input', () => { e.value = parseFloat(slider.value); out.textContent = `${e.value >= 0 ? '+' : ''}${e.value.toFixed(1)}× max`; });
    slider.addEventListener('change', () => steer());
    const clamp = document.createElement('button');
    clamp.type = 'button'; clamp.textContent = e.op === 'set' ? 'unclamp' : 'clamp 0';
    clamp.title = 'set this feature to zero on the input (or undo)';
    clamp.addEventListener('click', () => { if (e.op === 'set') { e.op = 'add'; e.value = 0; } else { e.op = 'set'; e.value = 0; } renderEdits(); steer(); });
    const rm = document.createElement('button');
    rm.type = 'button'; rm.textContent = 'remove';
    rm.addEventListener('click', () => { state.edits.splice(i, 1); renderEdits(); steer(); });
    li.append(label, slider, out, clamp, rm);
    return li;
  }));
}

let steerSeq = 0;
async function steer() {
  syncUrl();
  if (!state.input) return;
  const seq = ++steerSeq;
  const form = inputForm();
  form.append('edits', JSON.stringify(state.edits));
  form.append('units', 'max');
  if (state.steerRegion && state.region) form.append('patches', state.region.join(','));
  const outBox = $('[data-steer-out]');
  outBox.classList.add('busy');
  try {
    const r = await post(url('steer_json', { sae_id: saeId }), form);
    if (seq === steerSeq) renderSteer(r);
  } catch (e) {
    if (seq === steerSeq) showError(e.message);
  } finally {
    outBox.classList.remove('busy');
  }
}

function classBars(r) {
  const box = document.createElement('div');
  box.className = 'classes';
  box.dataset.classes = '';
  const h = document.createElement('h3');
  h.textContent = 'Model prediction (before → after)';
  box.append(h);
  for (const c of r.compare || []) {
    const row = document.createElement('div');
    row.className = 'cbar';
    row.dataset.class = c.name;
    row.innerHTML = '<span class="cname"></span><span class="bar before"><i></i></span><span class="bar after"><i></i></span><span class="pv"></span>';
    row.querySelector('.cname').textContent = c.name;
    row.querySelector('.before i').style.width = `${(100 * c.before).toFixed(1)}%`;
    row.querySelector('.after i').style.width = `${(100 * c.after).toFixed(1)}%`;
    row.querySelector('.pv').textContent = `${(100 * c.before).toFixed(1)}% → ${(100 * c.after).toFixed(1)}%`;
    box.append(row);
  }
  return box;
}

function thumbRow(title, rows) {
  const box = document.createElement('div');
  box.className = 'nrow';
  const h = document.createElement('h3');
  h.textContent = title;
  const strip = document.createElement('div');
  strip.className = 'strip';
  for (const s of rows) {
    const a = document.createElement('a');
    a.href = s.url;
    a.title = `${s.caption || s.label || 'sample ' + s.sample_id} (cosine ${s.cosine.toFixed(3)})`;
    if (s.thumb_url) { const im = document.createElement('img'); im.src = s.thumb_url; im.alt = s.caption || ''; im.width = 64; im.height = 64; a.append(im); } else { a.textContent = s.caption || `#${s.sample_id}`; }
    strip.append(a);
  }
  box.append(h, strip);
  return box;
}

function renderSteer(r) {
  const out = $('[data-steer-out]');
  for (const f of (r.after.features || [])) if (f.title) state.titles.set(f.feature_id, f.title);
  if ((r.after.features || []).some((f) => f.title)) renderEdits();
  const parts = [];
  if (r.compare) parts.push(classBars(r));
  if (r.before.neighbors) {
    parts.push(thumbRow('Nearest dataset samples before', r.before.neighbors));
    parts.push(thumbRow('… and after the edit', r.after.neighbors));
  }
  if (r.after.features && r.after.features.length) {
    const p = document.createElement('p');
    p.className = 'hint';
    p.textContent = 'Edited features, encoded again: ' + r.after.features.map((f, i) => `#${f.feature_id} ${fmt(r.before.features[i].activation)} → ${fmt(f.activation)}`).join(', ');
    parts.push(p);
  }
  out.replaceChildren(...parts);
}

function setupSteer() {
  $('[data-steer-add]').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = parseInt($('[data-steer-add] input').value, 10);
    if (Number.isInteger(v)) addEdit(v);
  });
  const reg = $('[data-steer-region]');
  if (reg) {
    reg.checked = state.steerRegion;
    reg.addEventListener('change', () => { state.steerRegion = reg.checked; steer(); });
  }
}

// A worker that `saescope serve` just started needs a few seconds: keep the status line current.
async function watchStatus(triesLeft) {
  const status = $('[data-live-status]');
  if (status.classList.contains('ok') || triesLeft <= 0) return;
  try {
    const r = await fetch('/live/status.json', { headers: { Accept: 'application/json' } });
    const s = await r.json();
    status.textContent = s.message;
    status.className = `live-status ${s.ok ? 'ok' : 'off'}`;
  } catch (e) { /* keep the last line */ }
  setTimeout(() => watchStatus(triesLeft - 1), 2000);
}

watchStatus(15);
setupInputs();
setupRegion();
setupSteer();
window.addEventListener('resize', drawOverlay);
if (root.dataset.sample !== '') {
  state.input = { kind: 'sample', sampleId: parseInt(root.dataset.sample, 10) };
  inspect();
}
