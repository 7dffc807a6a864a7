"""`kyutai-stt export-web DIR [--model PACKAGE]`: the browser app as a static site any web server can host.

DIR receives the app, the shared kernels, the plans of the package and (unless --no-model) the package itself in
DIR/model/. With --no-model the page loads the package from the URL given as ?model=URL (e.g. a Hugging Face
repo's https://huggingface.co/OWNER/NAME/resolve/main/, which allows cross-origin fetches): it must be the very
package the plans were made for (the page checks the manifest's SHA-256). docs/browser.md: hosting and uploading.
With --npm, DIR receives the embeddable client as an npm package directory instead (`npm pack DIR` makes its tarball).
"""
from __future__ import annotations

import sys

from kyutai_stt.site.build import export_npm, export_site
from kyutai_stt.weights.cache import resolve_model


def add_arguments(parser) -> None:
    parser.add_argument("out_dir", metavar="DIR",
                        help="where to write the site (a new directory, or an earlier export)")
    parser.add_argument("--model", metavar="DIR|URL|HF_ID",
                        help="model package the site is for (default: the official model, converted once)")
    parser.add_argument("--no-model", action="store_true",
                        help="do not copy the package into DIR/model/ (host it elsewhere and pass ?model=URL)")
    parser.add_argument("--npm", action="store_true",
                        help="write the embeddable client (stt-client.js, its modules, kernels, TypeScript "
                             "declarations) as an npm package directory instead; no model")


def run(args) -> int:
    if args.npm:
        out = export_npm(args.out_dir)
        print(f"wrote the npm package to {out}; `npm pack {out}` makes its tarball")
        return 0
    package_dir = resolve_model(args.model, progress=lambda m: print(m, file=sys.stderr, flush=True))
    site = export_site(args.out_dir, package_dir, copy_model=not args.no_model)
    print(f"wrote the site to {site}; serve that directory with any static web server "
          f"(e.g. python3 -m http.server -d {site}) and open it over https or from localhost")
    return 0
