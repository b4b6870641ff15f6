// Static-site feature table (`saescope publish`): what app/views/feature_table.py does in SQL, done
// in the browser over search/features.json + search/table.json (precompute/publish_table.py).
// The state is the URL, with the server's parameters and defaults, so a shared link shows the same
// rows; the first page the publish wrote (sorted by id) is replaced only when the URL asks for more.
(function () {
  'use strict';
  const S = window.saescopeStatic;
  if (!S) return;
  const SORTABLE = ['feature_id', 'name', 'name_score', 'density', 'n_fired', 'mean_act', 'max_act', 'label_entropy', 'cluster_id', 'top_label'];
  const DEFAULTS = { sort: 'feature_id', order: 'asc', min_density: null, max_density: null, cluster: null, label: null, name: null, ids: '', limit: 100, offset: 0 };
  const FIELDS = Object.keys(DEFAULTS);
  const HEAD_ORDER = ['feature_id', 'name', 'name_score', 'density', 'n_fired', 'mean_act', 'max_act', 'label_entropy', 'top_label', 'cluster_id'];
  const CSV_COLUMNS = ['feature_id', 'name', 'name_score', 'name_coverage', 'density', 'n_fired', 'mean_act', 'max_act', 'label_entropy', 'top_label', 'cluster_id'];

  // app.render.fmt_num for floats: Python's '.3g' below 1e-3 and from 1e5, else 3 decimals trimmed.
  function fmtFloat(v, digits = 3) {
    if (v === null || v === undefined || Number.isNaN(v)) return '–';
    if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5)) {
      const [mant, ex] = v.toExponential(digits - 1).split('e');
      const exp = Number(ex);
      if (exp >= -4 && exp < digits) return trim(v.toFixed(digits - 1 - exp));
      return `${trim(mant)}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
    }
    return trim(v.toFixed(digits));
  }
  const trim = (s) => (s.includes('.') ? s.replace(/0+$/, '').replace(/\.$/, '') : s);
  const fmtInt = (v) => (v === null || v === undefined ? '–' : v.toLocaleString('en-US'));
  const pct = (v) => (v === null || v === undefined ? '–' : `${(100 * v).toFixed(2)}%`);

  class BadParam extends Error {}

  function parseState(params) {
    const st = { ...DEFAULTS };
    const num = (k, int) => {
      const raw = params.get(k);
      if (raw === null || raw.trim() === '') return null;
      const v = Number(raw);
      if (!Number.isFinite(v) || (int && !Number.isInteger(v))) throw new BadParam(`${k}: ${JSON.stringify(raw)} is not ${int ? 'a whole number' : 'a number'}`);
      return v;
    };
    for (const k of ['sort', 'order']) if (params.get(k)) st[k] = params.get(k);
    if (!SORTABLE.includes(st.sort)) throw new BadParam(`sort: '${st.sort}' is not one of ${SORTABLE.join(', ')}`);
    if (!['asc', 'desc'].includes(st.order)) throw new BadParam(`order: '${st.order}' must be asc or desc`);
    st.min_density = num('min_density'); st.max_density = num('max_density'); st.cluster = num('cluster', true);
    for (const k of ['label', 'name']) st[k] = params.get(k) || null;
    st.ids = params.get('ids') || '';
    const limit = num('limit', true); const offset = num('offset', true);
    if (limit !== null) { if (limit < 1 || limit > 500) throw new BadParam('limit: must be 1-500'); st.limit = limit; }
    if (offset !== null) { if (offset < 0) throw new BadParam('offset: must be 0 or more'); st.offset = offset; }
    st.ranges = parseRanges(st.ids);
    return st;
  }

  function parseRanges(ids) { // feature_table.parse_ranges
    const out = [];
    for (const part of ids.split(',').map((p) => p.trim()).filter(Boolean)) {
      const m = part.match(/^(\d+)(?:-(\d+))?$/);
      if (!m) throw new BadParam(`ids: '${part}' is not a feature id or range like 3-7`);
      const a = Number(m[1]); const b = m[2] === undefined ? a : Number(m[2]);
      if (b < a) throw new BadParam(`ids: '${part}' is not a range low-high of feature ids`);
      out.push([a, b]);
    }
    return out;
  }

  // TableQuery.params: non-defaults in field order, with `change` applied.
  function params(st, change = {}) {
    const q = { ...st, ...change };
    const p = new URLSearchParams();
    for (const k of FIELDS) {
      const v = q[k];
      if (v !== null && v !== '' && v !== DEFAULTS[k]) p.append(k, String(v));
    }
    return p.toString();
  }

  function rowsOf(idx, tab) {
    const c = tab.columns;
    return idx.ids.map((fid, i) => {
      const name = idx.names[i];
      const score = c.name_score[i];
      return {
        feature_id: fid, name, name_score: score, name_coverage: c.name_coverage[i], density: c.density[i],
        n_fired: c.n_fired[i], mean_act: c.mean_act[i], max_act: c.max_act[i], label_entropy: c.label_entropy[i],
        cluster_id: c.cluster_id[i], top_label: c.top_label[i] >= 0 ? tab.labels[c.top_label[i]] : null,
        title: !name ? `feature ${fid}` : (score !== null && score < 0.5 ? `maybe ${name}` : name),
      };
    });
  }

  function select(rows, st) { // feature_table._where and its ORDER BY (NULLS LAST, then feature_id)
    const name = st.name ? st.name.toLowerCase() : null;
    const inRanges = (f) => st.ranges.some(([a, b]) => f >= a && f <= b);
    const out = rows.filter((r) => (st.min_density === null || (r.density !== null && r.density >= st.min_density))
      && (st.max_density === null || (r.density !== null && r.density <= st.max_density))
      && (st.cluster === null || r.cluster_id === st.cluster)
      && (!st.label || r.top_label === st.label)
      && (!name || (r.name || '').toLowerCase().includes(name))
      && (!st.ranges.length || inRanges(r.feature_id)));
    const dir = st.order === 'asc' ? 1 : -1;
    const k = st.sort;
    out.sort((a, b) => {
      const x = a[k]; const y = b[k];
      if (x !== y) {
        if (x === null) return 1;
        if (y === null) return -1;
        if (x < y) return -dir;
        if (x > y) return dir;
      }
      return a.feature_id - b.feature_id;
    });
    return out;
  }

  const el = S.el;

  function rowEl(r) {
    const tr = el('tr', { 'data-feature': r.feature_id });
    const url = S.featureUrl(r.feature_id);
    const td = (text, num) => el('td', num ? { class: 'num' } : {}, text);
    const a1 = td('', true); a1.appendChild(el('a', { href: url }, `#${r.feature_id}`)); tr.appendChild(a1);
    const a2 = td(''); a2.appendChild(el('a', { href: url }, r.title)); tr.appendChild(a2);
    tr.appendChild(td(r.name ? pct(r.name_score) : '–', true));
    tr.appendChild(td(pct(r.density), true));
    tr.appendChild(td(fmtInt(r.n_fired), true));
    tr.appendChild(td(fmtFloat(r.mean_act), true));
    tr.appendChild(td(fmtFloat(r.max_act), true));
    tr.appendChild(td(r.label_entropy !== null ? fmtFloat(r.label_entropy, 2) : '–', true));
    tr.appendChild(td(r.top_label || '–'));
    tr.appendChild(td(r.cluster_id !== null && r.cluster_id >= 0 ? String(r.cluster_id) : '–', true));
    return tr;
  }

  function csvCell(v) { // feature_table._cell, then csv quoting
    if (v === null || v === undefined) return '';
    let s = String(v);
    if (typeof v === 'string' && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
    return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s; // (no quote-slash pairs: publish_rewrite.rewrite_js)
  }

  function blobLink(a, text, type) {
    if (a.dataset.blob) URL.revokeObjectURL(a.dataset.blob);
    const href = URL.createObjectURL(new Blob([text], { type }));
    a.dataset.blob = href;
    a.href = href;
  }

  function render(st, all) {
    const base = `${S.saeBase}features/`;
    const link = (change) => `${base}?${params(st, change)}`.replace(/\?$/, '');
    const rows = all.slice(st.offset, st.offset + st.limit);
    const form = document.querySelector('form.table-filters');
    for (const k of ['sort', 'order', 'name', 'min_density', 'max_density', 'cluster', 'label', 'ids']) {
      const input = form && form.elements.namedItem(k);
      if (input) input.value = st[k] === null ? '' : String(st[k]);
    }
    const count = document.querySelector('p.count');
    count.dataset.count = String(all.length);
    count.firstChild.textContent = `${fmtInt(all.length)} feature${all.length === 1 ? '' : 's'}${st.ids ? ' in the selection' : ''}`
      + `${rows.length ? `; ${st.offset + 1}–${st.offset + rows.length} shown` : ''}.\n  Export: `;
    const [csvA, jsonA] = count.querySelectorAll('a');
    blobLink(csvA, [CSV_COLUMNS.join(','), ...all.map((r) => CSV_COLUMNS.map((c) => csvCell(r[c])).join(','))].join('\n') + '\n', 'text/csv');
    csvA.setAttribute('download', `${S.saeId}-features.csv`);
    blobLink(jsonA, JSON.stringify({ data: rows, count: all.length, limit: st.limit, offset: st.offset }), 'application/json');
    document.querySelectorAll('table.feature-table thead th').forEach((th, i) => {
      const key = HEAD_ORDER[i]; const a = th.querySelector('a');
      const head = a.textContent.replace(/ [▲▼]$/, '');
      a.href = link({ sort: key, order: st.sort === key && st.order === 'asc' ? 'desc' : 'asc', offset: 0 });
      a.textContent = st.sort === key ? `${head} ${st.order === 'asc' ? '▲' : '▼'}` : head;
      if (st.sort === key) th.setAttribute('aria-sort', st.order === 'asc' ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    });
    const body = document.querySelector('table.feature-table tbody');
    body.replaceChildren(...(rows.length ? rows.map(rowEl)
      : [(() => { const tr = el('tr'); tr.appendChild(el('td', { colspan: 10 }, 'No feature matches these filters.')); return tr; })()]));
    const nav = document.querySelector('nav.pager');
    nav.replaceChildren();
    if (st.offset > 0) nav.appendChild(el('a', { href: link({ offset: Math.max(0, st.offset - st.limit) }), rel: 'prev' }, `← previous ${st.limit}`));
    if (st.offset + st.limit < all.length) nav.appendChild(el('a', { href: link({ offset: st.offset + st.limit }), rel: 'next' }, `next ${st.limit} →`));
  }

  async function tablePage() {
    const count = document.querySelector('p.count');
    let st;
    try {
      st = parseState(new URLSearchParams(location.search));
    } catch (e) {
      if (!(e instanceof BadParam)) throw e;
      count.textContent = `${e.message}; fix the address or open the table without it.`;
      count.setAttribute('role', 'alert');
      return;
    }
    const [idx, tab] = await Promise.all([S.featuresIndex(), S.tableIndex()]);
    if (!idx || !tab) return;
    render(st, select(rowsOf(idx, tab), st));
    document.body.dataset.tableDone = 'true';
  }

  S.table = { rowsOf, fmtFloat };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', tablePage);
  else tablePage();
})();
