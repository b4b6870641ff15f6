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
  const MAX_TERMS = 6, NAME_WEIGHT = 10, PAGE_SIZE = 24;
  const loaded = new Map();
  const realFetch = window.fetch.bind(window);

  function load(path) { // JSON from the site, once per page
    if (!loaded.has(path)) loaded.set(path, realFetch(path).then((r) => (r.ok ? r.json() : null)).catch(() => null));
    return loaded.get(path);
  }
  const featuresIndex = () => load(`${saeBase}search/features.json`);
  const title = (idx, i) => idx.names[i] || `feature ${idx.ids[i]}`;
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

  // Words as the server reads them: distinct, possessive 's dropped, stop words dropped from longer queries.
  function searchTerms(q) {
    const words = (q.match(/[\p{L}\p{N}_]+(?:['’][\p{L}\p{N}_]+)*/gu) || []).map((w) => w.replace(/['’]s$/, '').toLowerCase());
    const distinct = [...new Set(words)];
    const meaningful = distinct.filter((w) => !STOP.has(w));
    // the index splits words at apostrophes: match a word by its longest piece
    return (meaningful.length ? meaningful : distinct).slice(0, MAX_TERMS)
      .map((w) => w.split(/['’]/).reduce((a, b) => (b.length > a.length ? b : a)));
  }

  const shardKey = (w) => (/^[a-z0-9]/.test(w) ? w[0] : '_');

  // One word: features whose name has it, and per feature how many top samples have it.
  async function matchTerm(t) {
    const shard = (await load(`${saeBase}search/words-${shardKey(t)}.json`)) || {};
    const whole = [t, `${t}s`, `${t}es`].filter((w) => Object.hasOwn(shard, w));
    const forms = whole.length ? whole : Object.keys(shard).filter((w) => w.startsWith(t));
    const names = new Set(), hits = new Map();
    for (const w of forms) {
      const [nameIds, flat] = shard[w];
      nameIds.forEach((f) => names.add(f));
      for (let i = 0; i < flat.length; i += 2) hits.set(flat[i], Math.max(hits.get(flat[i]) || 0, flat[i + 1]));
    }
    return { names, hits };
  }

  async function search(q) {
    const terms = searchTerms(q);
    const per = await Promise.all(terms.map(matchTerm));
    const score = new Map();
    per.forEach(({ names, hits }) => {
      for (const f of new Set([...names, ...hits.keys()])) {
        const s = score.get(f) || { terms: 0, score: 0, matches: 0 };
        s.terms += 1;
        s.score += (names.has(f) ? NAME_WEIGHT : 0) + (hits.get(f) || 0);
        s.matches = Math.max(s.matches, hits.get(f) || 0);
        score.set(f, s);
      }
    });
    const rows = [...score.entries()].map(([f, s]) => ({ feature_id: f, ...s }));
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

  async function searchPage() {
    const params = new URLSearchParams(location.search);
    const q = (params.get('q') || '').trim();
    const box = document.getElementById('q');
    if (box) box.value = q;
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
    const { terms, rows } = await search(q);
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
      li.appendChild(el('small', {}, `${r.terms < terms.length ? 'some of the words · ' : ''}score ${r.score} · ${r.matches} matching top samples`));
      list.appendChild(li);
      addThumbs(li, r.feature_id);
    }
    const pages = Math.ceil(n / PAGE_SIZE);
    if (pages > 1) {
      const nav = el('nav', { class: 'pager', 'aria-label': 'Result pages' });
      const link = (p, text, rel) => el('a', { href: `${saeBase}search/?q=${encodeURIComponent(q)}&page=${p}`, rel }, text);
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

  const pages = { 'search/': searchPage, 'feature/random/': randomFeature, 'game/': gameRound, 'game/answer/': gameAnswer };
  const run = saeId && pages[rest];
  if (run) {
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', run);
    else run();
  }
})();
