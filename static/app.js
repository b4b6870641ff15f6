// Page helpers shared by every view: copy-link, patch heatmap overlays, gallery keyboard nav.

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

// Heat colour: transparent blue -> opaque red, alpha grows with the value.
export function heatColor(t) {
  const r = Math.round(255 * Math.min(1, 2 * t));
  const g = Math.round(255 * Math.max(0, 1 - Math.abs(t - 0.5) * 2) * 0.6);
  const b = Math.round(255 * Math.max(0, 1 - 2 * t));
  return [r, g, b, Math.round(200 * t)];
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
}

function setupHeat() {
  document.querySelectorAll('canvas.heat').forEach(drawHeat);
  document.querySelectorAll('[data-heat-toggle]').forEach((box) => {
    const apply = () => document.body.classList.toggle('heat-off', !box.checked);
    box.addEventListener('change', apply);
    apply();
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
setupHeat();
setupGalleryKeys();
