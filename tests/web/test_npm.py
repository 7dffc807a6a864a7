"""The embeddable client as an npm package: export_npm + `npm pack` make a tarball with every module stt-client.js
loads and the kernels; its TypeScript declarations pass `tsc --strict` on a page using the whole API (and reject a
wrong use); Node resolves its `exports`; the README's embedding example runs from the installed tarball in Chromium.

npm and TypeScript: npm comes with Node (Debian's nodejs/npm); TypeScript is installed from the npm registry into
.cache/npm-tools/ of the repository (ignored by git) the first time, then reused. A machine without npm fails
these tests (./dev.sh installs it), it does not skip them."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from npm_tools import install_tools, npm

from kyutai_stt import __version__
from kyutai_stt.site.build import KERNEL_DIR, NPM_NAME, SiteError, client_modules, export_npm

ROOT = Path(__file__).resolve().parents[2]
TYPESCRIPT = "typescript@5.9.3"
LOAD_TIMEOUT_MS = 300_000
RUN_TIMEOUT_MS = 600_000


@pytest.fixture(scope="session")
def tsc() -> Path:
    return install_tools(TYPESCRIPT.replace("@", "-"), TYPESCRIPT) / "node_modules" / ".bin" / "tsc"


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("npm")
    package = export_npm(out / "package")
    name = npm("pack", "--pack-destination", str(out), cwd=package).strip().splitlines()[-1]
    return out / name


@pytest.fixture(scope="module")
def project(tarball, tmp_path_factory) -> Path:
    """A page's project with the tarball installed as a dependency (node_modules/kyutai-stt)."""
    app = tmp_path_factory.mktemp("app")
    (app / "package.json").write_text(json.dumps({"name": "embedding-page", "private": True, "type": "module"}))
    npm("install", str(tarball), cwd=app)
    return app


def test_tarball_holds_the_client_its_modules_and_kernels(tarball):
    with tarfile.open(tarball) as t:
        names = sorted(n.removeprefix("package/") for n in t.getnames())
        meta = json.load(t.extractfile("package/package.json"))
    modules = client_modules()
    assert {"stt-client.js", "worker.js", "runtime.js", "audio-processor.js", "protocol.js"} <= set(modules)
    kernels = sorted(f"kernels/{p.name}" for p in KERNEL_DIR.glob("*.wgsl"))
    assert names == sorted(modules + kernels + ["README.md", "package.json", "stt-client.d.ts"])
    assert "app.js" not in names and "index.html" not in names and "sw.js" not in names, "the page is not shipped"
    assert meta["name"] == NPM_NAME and meta["version"] == __version__ and meta["type"] == "module"
    assert meta["exports"]["."] == {"types": "./stt-client.d.ts", "default": "./stt-client.js"}
    assert not meta.get("dependencies") and not meta.get("peerDependencies"), "no framework, no dependency"


def test_export_npm_replaces_only_its_own_exports(tmp_path):
    done = subprocess.run([sys.executable, "-m", "kyutai_stt.cli", "export-web", str(tmp_path / "pkg"), "--npm"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "npm pack" in done.stdout, done.stderr
    assert json.loads((tmp_path / "pkg" / "package.json").read_text())["name"] == NPM_NAME
    (tmp_path / "pkg" / "stale.js").write_text("from an older export")
    export_npm(tmp_path / "pkg")
    assert not (tmp_path / "pkg" / "stale.js").exists(), "an earlier export is replaced whole"

    project = tmp_path / "my-project"            # a user's npm project: never replaced
    project.mkdir()
    (project / "package.json").write_text('{"name": "mine"}')
    with pytest.raises(SiteError, match="not an npm package export"):
        export_npm(project)
    assert (project / "package.json").read_text() == '{"name": "mine"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-project", "pkg"], "no partial directory left behind"


USE_EVERYTHING = """
import {SttClient, SttError, ErrorCode, decodeToMono24k, webGpuProblem} from 'kyutai-stt';
import type {Diagnostics, EngineInfo, Pace, Stats, Word} from 'kyutai-stt';

const stt = new SttClient({modelUrl: '/model/', plansUrl: '/plans.json'});
const off: () => void = stt.on('word', ({text, start, end}: Word) => console.log(text.toUpperCase(), start + end));
off();
stt.on('partial', ({text}) => text.trim());
stt.on('endOfTurn', ({time, probability}) => time * probability);
stt.on('stats', (s: Stats) => s.realTimeFactor + s.droppedSeconds + (s.level ?? 0) + (s.stageMs?.lm ?? 0));
stt.on('pace', (p: Pace) => { if (!p.keepsUp) console.warn(p.realTimeFactor.toFixed(1), p.maxBacklogSeconds); });
stt.on('error', (e: SttError) => { if (e.code === ErrorCode.DEVICE_LOST) console.error(e.message, e.fix); });
stt.on('progress', (p) => { if (p.phase === 'download') console.log(p.loaded / p.total, p.cached); });

async function main(file: File): Promise<number> {
  const problem: SttError | null = webGpuProblem();
  if (problem) throw problem;
  const info: EngineInfo = await stt.load({maxBacklogSeconds: 2, decoder: {eot_threshold: 0.3}});
  console.log(info.adapter.vendor, info.variant, info.timings.totalMs);
  await stt.start();
  const {stats} = await stt.stop();
  const words: Word[] = await stt.transcribeFile(file, ({done, total}) => done / total);
  const pcm: Float32Array = await decodeToMono24k(await file.arrayBuffer(), file.name);
  const {words: again} = await stt.transcribePcm(pcm);
  await stt.pushAudio(new Float32Array(1920));
  await stt.flush();
  const {ids, leadInSeconds} = await stt.setPrompt({text: 'Loonah', audio: file});
  await stt.setPrompt({text: 'Kyutai', audio: new Float32Array(24000)});
  await stt.setPrompt(null);
  await stt.load({prompt: {text: 'Loonah'}});
  console.log(ids + leadInSeconds, ErrorCode.PROMPT);
  const report: Diagnostics = await stt.diagnostics();
  if (report.adapter && typeof report.adapter === 'object') console.log(report.adapter.limits.maxBufferSize);
  await stt.clearCache();
  stt.destroy();
  return words.length + again.length + (stats?.frames ?? 0);
}
export {main};
"""

WRONG_USES = {
    "unknown event": "stt.on('words', () => {});",
    "a word has no 'txt'": "stt.on('word', (w) => w.txt);",
    "a bad option type": "stt.load({maxBacklogSeconds: 'two'});",
    "no such error code": "const c: typeof ErrorCode.NO_WEBGPU = 'no-gpu';",
    "a prompt's text is a string": "stt.setPrompt({text: 42});",
}


def check_types(tsc: Path, project: Path, sources: dict[str, str]) -> subprocess.CompletedProcess:
    """tsc --strict over the given files (name -> source) in one run (each run costs seconds of Node start-up)."""
    for name, source in sources.items():
        (project / name).write_text(source)
    (project / "tsconfig.json").write_text(json.dumps({"compilerOptions": {
        "strict": True, "noEmit": True, "target": "es2022", "module": "es2022", "moduleResolution": "bundler",
        "lib": ["es2022", "dom"], "skipLibCheck": False}, "files": list(sources)}))
    return subprocess.run([str(tsc), "-p", str(project)], capture_output=True, text=True, timeout=300)


def test_typescript_declarations_check_with_tsc(tsc, project):
    done = check_types(tsc, project, {"main.ts": USE_EVERYTHING})
    assert done.returncode == 0, f"tsc rejects a correct use of the API:\n{done.stdout}{done.stderr}"
    # Every wrong use in a file of its own, all checked in one run: each file must have its own error.
    header = USE_EVERYTHING.split("\nasync function")[0]
    wrong = {f"wrong{i}.ts": f"{header}\n{line}\n" for i, line in enumerate(WRONG_USES.values())}
    done = check_types(tsc, project, wrong)
    assert done.returncode != 0
    for (name, _), (what, line) in zip(wrong.items(), WRONG_USES.items()):
        assert f"{name}(" in done.stdout and "error TS" in done.stdout, f"tsc accepts a wrong use ({what}): {line}"


def test_node_resolves_the_package_exports(project):
    script = ("import {SttClient, SttError, ErrorCode, webGpuProblem} from 'kyutai-stt';"
              "const s = new SttClient({baseUrl: 'https://example.org/site/'});"
              "console.log(JSON.stringify([s.urls.kernelsUrl, new SttError(ErrorCode.QUOTA, 'x').code, "
              "webGpuProblem().code]));")
    done = subprocess.run(["node", "--input-type=module", "-e", script], cwd=project, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["https://example.org/site/kernels/", "quota", "no-webgpu"]


def test_readme_embedding_example_runs_from_the_tarball(browser, server, project):
    """The README's embedding example, its imports resolved by an import map to the installed tarball; the model
    and plans.json from the exported site: load, talk, stop, words on the page."""
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"<!-- embedding example[^>]*-->\n```html\n(.*?)```", readme, re.S).group(1)
    assert "./node_modules/kyutai-stt/stt-client.js" in example and len(example.strip().splitlines()) <= 14
    server.overrides["/embed.html"] = f"<!doctype html><meta charset=utf-8>\n{example}".encode()
    server.mounts["/node_modules/"] = project / "node_modules"
    try:
        page = browser.new_page()
        console = []
        page.on("console", lambda m: console.append(m.text))
        seen = len(server.requests)
        page.goto(f"{server.url}/embed.html")
        page.wait_for_function("!document.getElementById('talk').disabled", timeout=LOAD_TIMEOUT_MS)
        assert any(line.startswith("model: ") and "of" in line for line in console), console[-5:]
        page.click("#talk")
        page.wait_for_timeout(2500)              # the fake microphone plays its 2 s clip
        page.click("#stop")
        page.wait_for_function("document.getElementById('text').textContent.trim().length > 0",
                               timeout=RUN_TIMEOUT_MS)
        served = set(server.requests[seen:])
        assert "/node_modules/kyutai-stt/worker.js" in served and "/worker.js" not in served, \
            "the engine ran from the tarball, not from the site's copy"
        assert any(p.startswith("/node_modules/kyutai-stt/kernels/") for p in served)
        page.close()
    finally:
        server.overrides.pop("/embed.html", None)
        server.mounts.pop("/node_modules/", None)
