"""Turn the server's absolute URLs into site-relative ones, so a published folder works under any base path.

Every page gets a `<base>` pointing at the site root (relative, so the folder can move; absolute when
`--base-url` is given) and its own links lose their leading slash: `/sae/x/feature/3` becomes
`sae/x/feature/3/`, resolved against the base. Page links gain the trailing slash of the folder
form (`<path>/index.html`) that GitHub Pages, S3 websites, Hugging Face static Spaces and
`python -m http.server` all serve, so they need no redirect. JSON twins get the same treatment
for their URL fields (relative to the site root); the app's scripts for their path literals.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import unquote

STATIC_MARKER = "saescope-static"
RUNTIME_JS = "publish-search.js"

ATTR_URL_RE = re.compile(r'(\s(?:href|src|action|data-[\w-]+))="/(?!/)([^"]*)"')
JSON_URL_RE = re.compile(r'"((?:\w+_)?url|features_bin|samples_bin|redirect)":(\s*)"/(?!/)([^"]*)"')
JS_PATH_RE = re.compile(r"""([`'"])/(?=[a-z])""")  # '/sae/', `/thumb/...`, "/live/status.json"
STATIC_RE = re.compile(r"/static/[0-9a-f]{12}/")


def site_path(url_path: str) -> str:
    """Folder-form path of a page or file inside the site: '/' -> '', '/sae/x' -> 'sae/x'."""
    return unquote(url_path).lstrip("/")


def page_file(url_path: str) -> str:
    """Where a page's HTML lives: '/sae/x/feature/3' -> 'sae/x/feature/3/index.html'."""
    rel = site_path(url_path).rstrip("/")
    return f"{rel}/index.html" if rel else "index.html"


def page_depth(url_path: str) -> int:
    rel = site_path(url_path).strip("/")
    return rel.count("/") + 1 if rel else 0


@lru_cache(maxsize=1 << 16)  # pages repeat their links (samples, neighbours, thumbnails): ~400 per feature page
def relative_link(path: str) -> str:
    """'/sae/x?sel=1' -> 'sae/x/?sel=1'; files keep their names; the root becomes './'."""
    cut = min((i for i in (path.find("?"), path.find("#")) if i >= 0), default=len(path))
    head, tail = path[:cut], path[cut:]
    if not head:
        return "./" + tail
    last = head.rsplit("/", 1)[-1]
    if last and "." not in last:
        head += "/"
    return head + tail


def rewrite_links(html: str, static_prefix: str) -> str:
    html = STATIC_RE.sub("/" + static_prefix, html)
    return ATTR_URL_RE.sub(lambda m: f'{m.group(1)}="{relative_link(m.group(2))}"', html)


def head_block(url_path: str, static_prefix: str, base_url: str | None) -> str:
    """The marker, the base and the static runtime, first in <head> so every URL after it resolves."""
    depth = page_depth(url_path)
    here = site_path(url_path).strip("/")
    marker = f'<meta name="{STATIC_MARKER}" content="{here + "/" if here else ""}">'
    if base_url:
        base = f'<base href="{base_url.rstrip("/")}/">'
    else:
        # Served without the trailing slash (a host that skips the redirect), the folder is one level up.
        up = "../" * max(depth - 1, 0) or "./"
        base = (f'<base href="{"../" * depth or "./"}">' + (
            f"<script>if(!location.pathname.endsWith('/'))document.querySelector('base').href='{up}'</script>"
            if depth else ""))
    return f'{marker}{base}<script defer src="{static_prefix}{RUNTIME_JS}"></script>'


def rewrite_html(html: str, url_path: str, static_prefix: str, base_url: str | None = None) -> str:
    """A served page as the static site carries it."""
    html = rewrite_links(html, static_prefix)
    return html.replace("<head>", "<head>\n" + head_block(url_path, static_prefix, base_url), 1)


def rewrite_json(text: str) -> str:
    """URL fields of a JSON twin, relative to the site root."""
    return JSON_URL_RE.sub(lambda m: f'"{m.group(1)}":{m.group(2)}"{relative_link(m.group(3))}"', text)


def rewrite_js(text: str) -> str:
    """Path literals of the app's scripts ('/sae/', `/thumb/`...) relative to the page's <base>.

    Any quoted string that starts with one slash and a lower-case letter is a site path in these
    scripts; the runtime's fetch wrapper catches one built another way."""
    return JS_PATH_RE.sub(r"\1", text)


def rewrite_css(text: str, static_prefix: str) -> str:
    return STATIC_RE.sub("/" + static_prefix, text).replace("url(/" + static_prefix, "url(" + static_prefix)


NOT_FOUND_PROBE = "app.css"
ALTERNATE_RE = re.compile(r'<link rel="alternate" type="application/json" href="[^"]*">\n?')


def not_found_head(static_prefix: str, base_url: str | None) -> str:
    """`404.html`'s base: hosts serve it at whatever address was missing, at any depth.

    With --base-url the base is that. Without, a blocking script in <head> (before the styles and
    scripts it must resolve) walks up from the missing address to the first folder holding this
    publish's content-addressed stylesheet, the site root, and makes it the base; each step is
    a HEAD request of a small file, and the walk never leaves the folders above the address."""
    marker = f'<meta name="{STATIC_MARKER}" content="">'
    if base_url:
        return f'{marker}<base href="{base_url.rstrip("/")}/">'
    probe = static_prefix + NOT_FOUND_PROBE
    script = ("<script>(function(){var d=location.pathname.replace(/[^/]*$/,'');"
              "for(;;){var x=new XMLHttpRequest();try{x.open('HEAD',d+'" + probe + "',false);x.send();"
              "if(x.status===200){document.querySelector('base').href=d;return}}catch(e){}"
              "if(d==='/')return;d=d.replace(/[^/]*\\/$/,'')}})()</script>")
    return f'{marker}<base href="./">{script}'


def rewrite_not_found(html: str, static_prefix: str, base_url: str | None) -> str:
    """The server's 404 page as the site's `404.html` (GitHub Pages, Netlify, S3 and others serve it)."""
    html = rewrite_links(ALTERNATE_RE.sub("", html, count=1), static_prefix)
    return html.replace("<head>", "<head>\n" + not_found_head(static_prefix, base_url), 1)
