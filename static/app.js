// Page helpers shared by every view: copy-link, patch heatmap overlays, gallery keyboard nav, shortcuts.

import { PATTERNS } from './urls.js';

function copyLink(btn) {
  const url = window.location.href;
  const done = () => { btn.textContent = 'Copied'; setTimeout(() => { btn.textContent = 'Copy link'; }, 1500); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(url).then(done, () => fallbackCopy(url, done));
  } else {
    fallbackCopy(url, done);
  }
}

function fallbackCopy(text, done) {
  const ta = document.createElement('textarea');
  ta.value = text;
  ta.setAttribute('readonly', '');
  ta.style.position = 'absolute';
  ta.style.left = '-9999px';
  document.body.appendChild(ta);
  ta.select();
  try { document.execCommand('copy'); } finally { ta.remove(); }
  done();
}

// Addresses come from app.urls.PATTERNS (static/urls.js) and are filled in as in Python:
// each {param} one percent-encoded path segment.
export function url(name, params = {}, query = null) {
  const pattern = PATTERNS[name];
  if (!pattern) throw new Error(`no address named ${name}`);
  const path = pattern.replace(/\{(\w+)\}/g, (_, key) => encodeURIComponent(String(params[key])));
  return query ? `${path}?${new URLSearchParams(query)}` : path;
}

// Heat colour: transparent blue -> opaque red, alpha grows with the value.
export function heatColor(t) {
  const r = Math.round(255 * Math.min(1, 2 * t));
  const g = Math.round(255 * Math.max(0, 1 - Math.abs(t - 0.5) * 2) * 0.6);
  const b = Math.round(255 * Math.max(0, 1 - 2 * t));
  return [r, g, b, t < 0.08 ? 0 : Math.round(210 * t)]; // near-zero patches stay clear
}

export function drawHeat(canvas) {
  const vals = JSON.parse(canvas.dataset.heat || '[]');
  const w = canvas.width, h = canvas.height;
  if (vals.length !== w * h) return;
  const max = parseFloat(canvas.dataset.max) || Math.max(...vals) || 1;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(w, h);
  vals.forEach((v, i) => {
    const c = heatColor(Math.max(0, Math.min(1, v / max)));
    img.data.set(c, i * 4);
  });
  ctx.putImageData(img, 0, 0);
  canvas.dataset.drawn = 'true';
  alignHeat(canvas);
}

// The patch grid covers the whole model input (the image resized to a square), so the overlay must
// cover exactly the drawn image: with object-fit: contain that is a centred box of the image's aspect.
export function alignHeat(canvas) {
  const img = canvas.parentElement && canvas.parentElement.querySelector('img');
  if (!img) return;
  const place = () => {
    const nw = img.naturalWidth, nh = img.naturalHeight;
    if (!nw || !nh) return;
    const wrap = canvas.parentElement;
    const W = wrap.clientWidth || 1, H = wrap.clientHeight || 1;
    const s = Math.min(W / nw, H / nh);
    const w = (nw * s) / W * 100, h = (nh * s) / H * 100;
    Object.assign(canvas.style, { inset: 'auto', left: `${(100 - w) / 2}%`, top: `${(100 - h) / 2}%`, width: `${w}%`, height: `${h}%` });
    canvas.dataset.aligned = 'true';
  };
  if (img.complete && img.naturalWidth) place();
  else img.addEventListener('load', place, { once: true });
}

function setupHeat() {
  document.querySelectorAll('canvas.heat').forEach(drawHeat);
  const KEY = 'saescope-heatmaps';  // the choice follows the user from feature to feature
  document.querySelectorAll('[data-heat-toggle]').forEach((box) => {
    try { if (localStorage.getItem(KEY) === 'off') box.checked = false; } catch { /* private mode */ }
    const apply = () => document.body.classList.toggle('heat-off', !box.checked);
    box.addEventListener('change', () => {
      apply();
      try { localStorage.setItem(KEY, box.checked ? 'on' : 'off'); } catch { /* ignore */ }
    });
    apply();
  });
}

// Page-level shortcuts (feature pages): j / → next, k / ← previous, r random, h heatmaps, m map, / search.
function typing(e) {
  const t = e.target;
  return t && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName)) && t.type !== 'checkbox';
}

function setupShortcuts() {
  const nav = document.querySelector('[data-shortcuts]');
  const search = document.getElementById('q');
  document.addEventListener('keydown', (e) => {
    if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey || typing(e)) return;
    if (e.key === '/' && search) { e.preventDefault(); search.focus(); search.select(); return; }
    if (!nav) return;
    const inGallery = document.activeElement && document.activeElement.closest('[data-gallery]');
    const keys = { j: 'next', k: 'prev', r: 'random', m: 'map' };
    if (!inGallery) Object.assign(keys, { ArrowRight: 'next', ArrowLeft: 'prev' });
    if (e.key === 'h') {
      const box = document.querySelector('[data-heat-toggle]');
      if (box) { e.preventDefault(); box.click(); }
      return;
    }
    const which = keys[e.key];
    const link = which && nav.querySelector(`[data-nav="${which}"]`);
    if (link) { e.preventDefault(); window.location.href = link.href; }
  });
}

// Arrow keys move focus between the links of a gallery or result list.
function setupGalleryKeys() {
  document.querySelectorAll('[data-gallery]').forEach((g) => {
    g.addEventListener('keydown', (e) => {
      const links = [...g.querySelectorAll('a')];
      const i = links.indexOf(document.activeElement);
      if (i < 0) return;
      let j = null;
      if (e.key === 'ArrowRight' || e.key === 'ArrowDown') j = Math.min(links.length - 1, i + 1);
      if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') j = Math.max(0, i - 1);
      if (e.key === 'Home') j = 0;
      if (e.key === 'End') j = links.length - 1;
      if (j !== null) { e.preventDefault(); links[j].focus(); }
    });
  });
}

document.querySelectorAll('[data-copy-link]').forEach((b) => b.addEventListener('click', () => copyLink(b)));
// Guess-the-input game: number keys pick a candidate; score and streak are kept in localStorage.
function setupGame() {
  const KEY = 'saescope-game';
  let score = { played: 0, right: 0, streak: 0, best: 0 };
  try { score = { ...score, ...JSON.parse(localStorage.getItem(KEY) || '{}') }; } catch { /* private mode */ }
  const result = document.querySelector('[data-game-result]');
  // One round = one token: going back and picking again, or reloading, must not score twice.
  const token = new URLSearchParams(location.search).get('token') || '';
  let scored = [];
  try { scored = JSON.parse(localStorage.getItem(`${KEY}:scored`) || '[]'); } catch { /* private mode */ }
  if (result && token && !scored.includes(token)) {
    const right = result.dataset.gameResult === 'right';
    score.played += 1;
    score.right += right ? 1 : 0;
    score.streak = right ? score.streak + 1 : 0;
    score.best = Math.max(score.best, score.streak);
    try {
      localStorage.setItem(KEY, JSON.stringify(score));
      localStorage.setItem(`${KEY}:scored`, JSON.stringify([...scored, token].slice(-200)));
    } catch { /* ignore */ }
  }
  const out = document.getElementById('game-score');
  if (out && score.played) out.textContent = `Score ${score.right} / ${score.played} · streak ${score.streak} · best ${score.best}`;
  const cands = [...document.querySelectorAll('button.candidate[data-key]')];
  const again = document.querySelector('[data-play-again]');
  if (!cands.length && !again) return;
  document.addEventListener('keydown', (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey || typing(e)) return;
    const b = cands.find((c) => c.dataset.key === e.key);
    if (b) { e.preventDefault(); b.click(); return; }
    if (again && (e.key === 'n' || (e.key === 'Enter' && document.activeElement === document.body))) {
      e.preventDefault();
      window.location.href = again.href;
    }
  });
}

setupHeat();
setupGalleryKeys();
setupShortcuts();
setupGame();
