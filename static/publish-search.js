// Static-site runtime (`saescope publish`): what the server does per request, done in the browser.
// Loaded (deferred, before the app's modules) only by published pages, which carry
// <meta name="saescope-static" content="<this page's path in the site>"> and a <base> at the site root.
(function () {
  'use strict';
  const meta = document.querySelector('meta[name="saescope-static"]');
  if (!meta) return;
  const here = meta.content; // e.g. "sae/x/search/"
  const m = here.match(/^sae\/([^/]+)\/(.*)$/);
  const saeId = m ? decodeURIComponent(m[1]) : null;
  const rest = m ? m[2] : '';
  const saeBase = saeId ? `sae/${encodeURIComponent(saeId)}/` : '';
  const STOP = new Set('a an and are as at be by for from has in is it its of on or that the this to was were with'.split(' '));
  const MAX_TERMS = 6, NAME_WEIGHT = 10, CONCEPT_WEIGHT = 5, PAGE_SIZE = 24;
  const loaded = new Map();
  const realFetch = window.fetch.bind(window);

  function load(path) { // JSON from the site, once per page
    if (!loaded.has(path)) loaded.set(path, realFetch(path).then((r) => (r.ok ? r.json() : null)).catch(() => null));
    return loaded.get(path);
  }
  const featuresIndex = () => load(`${saeBase}search/features.json`);
  const tableIndex = () => load(`${saeBase}search/table.json`); // sort and filter columns (publish_table.py)
  const runtimeSrc = document.currentScript ? document.currentScript.src : '';
  const title = (idx, i) => (idx.titles ? idx.titles[i] : idx.names[i]) || `feature ${idx.ids[i]}`; // titles: as the server words them
  const featureUrl = (fid) => `${saeBase}feature/${fid}/`;

  // The map's lasso list asks features.json?ids=...: answered from the search index.
  async function featureList(params) {
    const idx = await featuresIndex();
    const want = new Set();
    for (const part of (params.get('ids') || '').split(',').filter(Boolean)) {
      const [lo, hi] = part.split('-').map(Number);
      for (let i = lo; i <= (Number.isFinite(hi) ? hi : lo); i++) want.add(i);
    }
    const limit = Number(params.get('limit')) || 100;
    const data = [];
    (idx ? idx.ids : []).forEach((fid, i) => {
      if (want.has(fid)) data.push({ feature_id: fid, name: idx.names[i], title: title(idx, i), density: idx.density[i], url: featureUrl(fid) });
    });
    return new Response(JSON.stringify({ data: data.slice(0, limit), count: data.length }), { headers: { 'Content-Type': 'application/json' } });
  }

  window.fetch = function (input, init) {
    if (typeof input === 'string') {
      if (input.startsWith('/') && !input.startsWith('//')) input = input.slice(1); // site-relative, never the host root
      const q = input.match(/^sae\/[^/?]+\/features\.json\?(.*)$/);
      if (q) return featureList(new URLSearchParams(q[1]));
    }
    return realFetch(input, init);
  };

  // Words as the index cuts them (app/search_text.py): lower case, ’ as ', possessive 's dropped,
  // English plurals to singular; a quoted phrase counts as its words here (the site keeps no bigrams).
  const len = (w) => [...w].length;
  function stem(w) {
    if (len(w) <= 3) return w;
    if (len(w) > 4 && w.endsWith('ies')) return `${w.slice(0, -3)}y`;
    if (/(ss|sh|ch|x|z)es$/.test(w)) return w.slice(0, -2);
    if (/(ss|us|is)$/.test(w)) return w;
    return w.endsWith('s') ? w.slice(0, -1) : w;
  }
  function searchTerms(q) {
    const raw = q.toLowerCase().replace(/’/g, "'").match(/[\p{L}\p{M}\p{N}_]+(?:'[\p{L}\p{M}\p{N}_]+)*/gu) || [];
    const distinct = [...new Set(raw.map((w) => stem(w.replace(/'s$/, ''))))].filter(Boolean);
    const meaningful = distinct.filter((w) => !STOP.has(w));
    return (meaningful.length ? meaningful : distinct).slice(0, MAX_TERMS);
  }

  const shardKey = (w) => (/^[a-z0-9]/.test(w) ? w[0] : '_');
  const popcount = (x) => { let n = 0; for (x >>>= 0; x; x &= x - 1) n++; return n; };

  // One word: per feature, as the server's per_part step: max name and concept weights, the union
  // of top-sample ranks, the summed sample weights (over every term a prefix matches).
  async function matchTerm(t) {
    const shard = (await load(`${saeBase}search/words-${shardKey(t)}.json`)) || {};
    const forms = Object.hasOwn(shard, t) ? [t] : Object.keys(shard).filter((w) => w.startsWith(t));
    const per = new Map();
    for (const w of forms) {
      const flat = shard[w];
      for (let i = 0; i < flat.length; i += 6) {
        const p = per.get(flat[i]) || { nw: 0, cw: 0, hi: 0, lo: 0, sw: 0 };
        p.nw = Math.max(p.nw, flat[i + 1]); p.cw = Math.max(p.cw, flat[i + 2]);
        p.hi |= flat[i + 3]; p.lo |= flat[i + 4]; p.sw += flat[i + 5];
        per.set(flat[i], p);
      }
    }
    return per;
  }

  // Rank as the server: every word before some, then 10 x name + 5 x concept + sample weight.
  async function search(q) {
    const terms = searchTerms(q);
    const per = await Promise.all(terms.map(matchTerm));
    const acc = new Map();
    for (const m of per) {
      for (const [f, p] of m) {
        const ranked = p.hi !== 0 || p.lo !== 0;
        if (!(p.nw > 0 || p.cw > 0 || ranked)) continue;
        const s = acc.get(f) || { terms: 0, score: 0, hi: 0, lo: 0 };
        s.terms += 1;
        s.score += NAME_WEIGHT * p.nw + CONCEPT_WEIGHT * p.cw + (ranked ? p.sw : 0);
        s.hi |= p.hi; s.lo |= p.lo;
        acc.set(f, s);
      }
    }
    const rows = [...acc.entries()].map(([f, s]) => ({
      feature_id: f, terms: s.terms, score: Math.round(s.score * 1e6) / 1e6, matches: popcount(s.hi) + popcount(s.lo) }));
    rows.sort((a, b) => b.terms - a.terms || b.score - a.score || a.feature_id - b.feature_id);
    return { terms, rows };
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  async function addThumbs(li, fid) {
    const card = await load(`${saeBase}feature/${fid}/card.json`);
    if (!card || !card.top.length) return;
    const span = el('span', { class: 'hit-thumbs' });
    for (const t of card.top) {
      if (t.thumb_url) span.appendChild(el('img', { src: t.thumb_url, alt: t.caption || t.label || `sample ${t.sample_id}`, loading: 'lazy', width: 64, height: 64 }));
      else span.appendChild(el('q', {}, t.caption || ''));
    }
    li.appendChild(span);
  }

  // app.views.search.Filters: narrow by density, cluster, label; order by relevance, density, max_act or id.
  const SORTS = ['relevance', 'density', 'max_act', 'id'];
  function searchFilters(params) {
    const f = { min_density: null, max_density: null, cluster: null, label: null, sort: params.get('sort') || 'relevance' };
    for (const k of ['min_density', 'max_density', 'cluster']) {
      const raw = (params.get(k) || '').trim();
      if (!raw) continue;
      const v = Number(raw);
      if (!Number.isFinite(v) || (k === 'cluster' && !Number.isInteger(v))) throw new Error(`${k}: ${JSON.stringify(raw)} is not a number`);
      f[k] = v;
    }
    f.label = params.get('label') || null;
    if (!SORTS.includes(f.sort)) throw new Error(`sort: '${f.sort}' is not one of ${SORTS.join(', ')}`);
    return f;
  }
  const narrows = (f) => f.min_density !== null || f.max_density !== null || f.cluster !== null || !!f.label;
  function filterParams(f) { // Filters.params: the non-default ones, in field order
    const out = [];
    for (const k of ['min_density', 'max_density', 'cluster', 'label', 'sort']) {
      if (f[k] !== null && f[k] !== '' && !(k === 'sort' && f[k] === 'relevance')) out.push([k, String(f[k])]);
    }
    return out;
  }
  function searchUrl(q, page, f) { // urls.search_url
    const p = new URLSearchParams([['q', q], ...filterParams(f)]);
    if (page !== 1) p.append('page', String(page));
    return `${saeBase}search/?${p}`;
  }

  // Filter and order the word matches as the server's _ranked does, with the table's columns.
  function refine(rows, f, idx, tab) {
    if (!narrows(f) && !['density', 'max_act'].includes(f.sort)) {
      if (f.sort === 'id') rows.sort((a, b) => a.feature_id - b.feature_id);
      return rows;
    }
    const pos = new Map(idx.ids.map((fid, i) => [fid, i]));
    const c = tab.columns;
    const label = f.label ? f.label.toLowerCase() : null;
    const col = (r, k) => { const i = pos.get(r.feature_id); return i === undefined ? null : c[k][i]; };
    const out = rows.filter((r) => {
      const i = pos.get(r.feature_id);
      if (i === undefined) return false;
      const d = c.density[i]; const lab = c.top_label[i] >= 0 ? tab.labels[c.top_label[i]] : null;
      return (f.min_density === null || (d !== null && d >= f.min_density)) && (f.max_density === null || (d !== null && d <= f.max_density))
        && (f.cluster === null || c.cluster_id[i] === f.cluster) && (!label || (lab !== null && lab.toLowerCase() === label));
    });
    const desc = (k) => (a, b) => {
      const x = col(a, k); const y = col(b, k);
      if (x !== y) { if (x === null) return 1; if (y === null) return -1; return y - x; }
      return a.feature_id - b.feature_id;
    };
    if (f.sort === 'density' || f.sort === 'max_act') out.sort(desc(f.sort));
    else if (f.sort === 'id') out.sort((a, b) => a.feature_id - b.feature_id);
    return out;
  }

  function fillFilterForm(q, f) {
    const form = document.querySelector('form.search-filters');
    if (!form) return;
    for (const k of ['q', 'min_density', 'max_density', 'cluster', 'label', 'sort']) {
      const input = form.elements.namedItem(k);
      if (input) input.value = k === 'q' ? q : (f[k] === null ? '' : String(f[k]));
    }
  }

  async function searchPage() {
    const params = new URLSearchParams(location.search);
    const q = (params.get('q') || '').trim();
    const box = document.getElementById('q');
    if (box) box.value = q;
    const count0 = document.querySelector('p.count') || document.querySelector('main h1');
    let f;
    try {
      f = searchFilters(params);
    } catch (e) {
      count0.textContent = `${e.message}; fix the address or search again.`;
      count0.setAttribute('role', 'alert');
      return;
    }
    fillFilterForm(q, f);
    if (!q) return;
    const idx = await featuresIndex();
    const count = document.querySelector('p.count') || document.querySelector('main h1');
    const idm = q.match(/^(?:#|f|feat|feature)?\s*#?\s*(\d+)$/i);
    if (idm) {
      const fid = Number(idm[1]);
      if (idx && idx.ids.includes(fid)) { location.replace(featureUrl(fid)); return; }
      count.textContent = `No feature ${fid}; feature ids are 0–${idx ? idx.d_sae - 1 : '?'}.`;
      count.setAttribute('role', 'alert');
      return;
    }
    const found = await search(q);
    const terms = found.terms;
    const tab = (narrows(f) || ['density', 'max_act'].includes(f.sort)) ? await tableIndex() : null;
    const rows = refine(found.rows, f, idx, tab);
    const nAll = rows.filter((r) => r.terms === terms.length).length;
    const n = rows.length;
    count.textContent = !terms.length ? 'Type a feature id (12, #12, f12) or words.'
      : n === 0 ? `No feature matches “${q}”.`
        : (terms.length > 1 && nAll < n) ? `${nAll} feature${nAll === 1 ? '' : 's'} match all of “${q}”; ${n - nAll} more match some of the words.`
          : `${n} feature${n === 1 ? '' : 's'} match “${q}”.`;
    const page = Math.max(1, Number(params.get('page')) || 1);
    const list = document.querySelector('ol.results');
    if (!list || !idx) return;
    document.querySelectorAll('main p.hint').forEach((p) => { p.hidden = n > 0; });
    const pos = new Map(idx.ids.map((f, i) => [f, i]));
    list.setAttribute('start', String((page - 1) * PAGE_SIZE + 1));
    for (const r of rows.slice((page - 1) * PAGE_SIZE, page * PAGE_SIZE)) {
      const i = pos.get(r.feature_id);
      const li = el('li', { 'data-feature': r.feature_id });
      const a = el('a', { href: featureUrl(r.feature_id) });
      a.appendChild(el('span', { class: 'fid' }, `#${r.feature_id}`));
      a.appendChild(document.createTextNode(` ${i === undefined ? `feature ${r.feature_id}` : title(idx, i)}`));
      li.appendChild(a);
      li.appendChild(document.createTextNode('\n  ')); // as the server's template spaces them
      const density = i === undefined ? null : idx.density[i];
      li.appendChild(el('small', {}, `${r.terms < terms.length ? 'some of the words · ' : ''}score ${r.score.toPrecision(3)} · ${r.matches} matching top samples · density ${density === null ? '–' : `${(100 * density).toFixed(2)}%`}`));
      list.appendChild(li);
      addThumbs(li, r.feature_id);
    }
    const pages = Math.ceil(n / PAGE_SIZE);
    if (pages > 1) {
      const nav = el('nav', { class: 'pager', 'aria-label': 'Result pages' });
      const link = (p, text, rel) => el('a', { href: searchUrl(q, p, f), rel }, text);
      if (page > 1) nav.appendChild(link(page - 1, '← previous', 'prev'));
      nav.appendChild(el('span', {}, ` page ${page} of ${pages} `));
      if (page < pages) nav.appendChild(link(page + 1, 'next →', 'next'));
      list.after(nav);
    }
    document.body.dataset.searchDone = 'true';
  }

  async function randomFeature() {
    const idx = await featuresIndex();
    if (!idx || !idx.ids.length) return;
    const live = idx.ids.filter((f, i) => (idx.density[i] || 0) > 0);
    const pick = (live.length ? live : idx.ids)[Math.floor(Math.random() * (live.length || idx.ids.length))];
    location.replace(featureUrl(pick));
  }

  async function gameRound() { // /game/ itself: a random round of the precomputed pool
    const pool = await load(`${saeBase}game/pool.json`);
    if (pool && pool.n_rounds > 1) location.replace(`${saeBase}game/round/${Math.floor(Math.random() * pool.n_rounds)}/`);
  }

  function gameAnswer() { // the candidates' form lands here: open the answer page of that round and pick
    const p = new URLSearchParams(location.search);
    const round = (p.get('token') || '').match(/^r(\d+)$/);
    const pick = p.get('pick') || '';
    if (round && /^\d+$/.test(pick)) location.replace(`${saeBase}game/answer/r${round[1]}/${pick}/${location.search}`);
  }

  function tablePage() { // publish-table.js, beside this file, renders the table from the URL's state
    window.saescopeStatic = { load, el, saeId, saeBase, featureUrl, featuresIndex, tableIndex };
    const s = document.createElement('script');
    s.src = runtimeSrc.replace(/publish-search\.js(\?.*)?$/, 'publish-table.js');
    document.head.appendChild(s);
  }

  const pages = { 'search/': searchPage, 'features/': tablePage, 'feature/random/': randomFeature, 'game/': gameRound, 'game/answer/': gameAnswer };
  const run = saeId && pages[rest];
  if (run) {
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', run);
    else run();
  }
})();
