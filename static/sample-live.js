// Sample page: every feature that fires on the sample, from the live worker (the index stores only
// the most active few), each with its patch heatmap over the sample's thumbnail.
import { drawHeat, url } from './app.js';

const box = document.querySelector('[data-live-all]');

function item(f, thumb, gw, gh) {
  const li = document.createElement('li');
  if (thumb && f.heatmap) {
    const wrap = document.createElement('span');
    wrap.className = 'thumb-wrap small';
    const img = document.createElement('img');
    img.src = thumb; img.width = 80; img.height = 80; img.alt = `heatmap of feature ${f.feature_id} on this sample`;
    const c = document.createElement('canvas');
    c.className = 'heat'; c.width = gw; c.height = gh; c.dataset.heat = JSON.stringify(f.heatmap);
    c.setAttribute('aria-hidden', 'true');
    wrap.append(img, c);
    li.append(wrap);
    img.addEventListener('load', () => drawHeat(c));
  }
  const a = document.createElement('a');
  a.href = f.url;
  const id = document.createElement('span');
  id.className = 'fid'; id.textContent = `#${f.feature_id}`;
  a.append(id, ` ${f.title}`);
  const act = document.createElement('span');
  act.className = 'act'; act.textContent = f.activation.toFixed(2);
  li.append(a, act);
  return li;
}

async function load() {
  const status = box.querySelector('[data-live-all-status]');
  try {  // ask first, so an explorer without a worker makes no failing request
    const live = await (await fetch('/live/status.json', { headers: { Accept: 'application/json' } })).json();
    if (!live.ok) { status.textContent = `Not available: ${live.message}`; return; }
  } catch (e) {
    status.textContent = 'Not available: the explorer did not answer';
    return;
  }
  const form = new FormData();
  form.append('sample_id', box.dataset.sample);
  form.append('limit', '200');
  try {
    const r = await fetch(url('inspect_json', { sae_id: box.dataset.sae }), { method: 'POST', body: form, headers: { Accept: 'application/json' } });
    const body = await r.json();
    if (!r.ok) throw new Error(body.message || `HTTP ${r.status}`);
    const res = body.results[0];
    const gw = parseInt(box.dataset.gridW, 10) || 1, gh = parseInt(box.dataset.gridH, 10) || 1;
    box.querySelector('[data-live-all-list]').replaceChildren(...res.features.map((f) => item(f, box.dataset.thumb, gw, gh)));
    status.textContent = `${res.n_firing} features fire on this sample${res.grid ? ' (on at least one patch)' : ''}; ` +
      (res.n_firing > res.features.length ? `the ${res.features.length} most active are listed.` : 'all are listed.');
  } catch (e) {
    status.textContent = `Not available: ${e.message}`;
  }
}

if (box) load();
