// Legend filtering for the explorer map: which category each point is in, how many points each
// category has, and which points a filter hides. Categories follow the colouring: a cluster id
// ('-1' for no cluster) when the map is coloured by cluster; 'valued' / 'none' (the grey "no value"
// points) when it is coloured by a quantity. The filter travels in the URL as `only=3,5,-1`.

const CATEGORY_RE = /^(-?\d{1,9}|none|valued)$/;
const MAX_ONLY = 500;

// `only` from the URL: known-shaped categories, at most MAX_ONLY, anything else dropped.
export function parseOnly(s) {
  const out = new Set();
  for (const part of (s || '').split(',')) {
    const c = part.trim();
    if (CATEGORY_RE.test(c) && out.size < MAX_ONLY) out.add(c === '-0' ? '0' : c);
  }
  return out;
}

// A function from point index to its category, for the colour key in use (`q`: the quantised
// colour column, 0 meaning no value; `cluster`: the cluster id column, absent when none were made).
export function categoryFn(key, cluster, q) {
  if (key === 'cluster' || !q) return (i) => String(cluster ? cluster[i] : 0);
  return (i) => (q[i] === 0 ? 'none' : 'valued');
}

export function countCategories(n, catOf) {
  const counts = new Map();
  for (let i = 0; i < n; i++) {
    const c = catOf(i);
    counts.set(c, (counts.get(c) || 0) + 1);
  }
  return counts;
}

// 1 for each point the filter hides (none when the filter is empty).
export function hiddenMask(n, catOf, only) {
  const hidden = new Uint8Array(n);
  if (!only.size) return hidden;
  for (let i = 0; i < n; i++) if (!only.has(catOf(i))) hidden[i] = 1;
  return hidden;
}

// A legend click: plain click shows only that category (or everything again when it was the only
// one shown); Shift/Ctrl/Cmd-click adds it to, or takes it from, the categories shown.
export function toggleCategory(only, cat, additive) {
  const next = new Set(only);
  if (additive) {
    if (next.has(cat)) next.delete(cat); else next.add(cat);
    return next;
  }
  return next.size === 1 && next.has(cat) ? new Set() : new Set([cat]);
}
