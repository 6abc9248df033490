"""Shared benchmark helpers: timing over all local devices, the matmul roofline, and writing
one section of BENCHMARKS.md per script (sections are replaced, never duplicated)."""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from tokensparse import cpu  # noqa: E402  (before JAX)

cpu.use_host_devices()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), '..')
BENCHMARKS_MD = os.path.join(ROOT, 'BENCHMARKS.md')
README_MD = os.path.join(ROOT, 'README.md')


def device_description() -> str:
  d = jax.devices()[0]
  if d.platform == 'cpu':
    name = platform.processor() or 'CPU'
    try:
      for line in open('/proc/cpuinfo'):
        if line.startswith('model name'):
          name = line.split(':', 1)[1].strip()
          break
    except OSError:
      pass
    return f'CPU: {name}, {os.cpu_count()} cores as {jax.local_device_count()} host devices'
  return f'{jax.local_device_count()} x {d.device_kind}'


def time_per_call(fn, *args, warmup: int = 1, iters: int = 5) -> float:
  """Median seconds per call of an already-jitted/pmapped fn (compilation excluded)."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def matmul_gflops(n: int = 2048) -> float:
  """fp32 GFLOP/s of an n^3 matmul, one per local device at once: the roofline here."""
  devices = jax.local_devices()
  a = jax.device_put_sharded([jnp.ones((n, n), jnp.float32)] * len(devices), devices) \
      if hasattr(jax, 'device_put_sharded') else jax.pmap(lambda x: x)(jnp.ones((len(devices), n, n)))
  f = jax.pmap(lambda x: x @ x)
  return 2 * n ** 3 * len(devices) / time_per_call(f, a, iters=3) / 1e9


def predict_fn(model, params):
  """A pmapped forward pass: images [devices, per_device, H, W, C] -> logits."""
  return jax.pmap(lambda p, x: model.apply({'params': p}, x)[0], in_axes=(None, 0))


def images_per_sec(model, params, batch: int, image_size: int, iters: int = 5) -> float:
  n = jax.local_device_count()
  if batch % n:
    n = 1
  x = jnp.zeros((n, batch // n, image_size, image_size, 3), jnp.float32)
  f = predict_fn(model, params) if n > 1 else jax.jit(
      lambda p, x: model.apply({'params': p}, x[0])[0])
  return batch / time_per_call(f, params, x, iters=iters)


def git_revision() -> str:
  try:
    return subprocess.check_output(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT,
                                   text=True).strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def write_section(name: str, body: str, path: str = BENCHMARKS_MD) -> None:
  """Replace (or append) the section `name` of BENCHMARKS.md (or of the markdown at `path`)."""
  text = open(path).read() if os.path.exists(path) else \
      '# Benchmarks\n\nMade by the scripts in `benchmarks/`; each writes its own section.\n'
  begin, end = f'<!-- BEGIN {name} -->', f'<!-- END {name} -->'
  section = f'{begin}\n{body.strip()}\n{end}'
  if begin in text:
    text = re.sub(re.escape(begin) + '.*?' + re.escape(end), lambda _: section, text, flags=re.S)
  else:
    text = text.rstrip() + '\n\n' + section + '\n'
  with open(path, 'w') as f:
    f.write(text)


def table(header: list[str], rows: list[list]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


def final_eval(workdir: str):
  """(last eval record of metrics.jsonl, config) of a work directory, or None if it has none."""
  import json  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from tokensparse import checkpoint  # pylint: disable=g-import-not-at-top
  path = os.path.join(ROOT, workdir)
  metrics = os.path.join(path, 'metrics.jsonl')
  if not os.path.exists(metrics):
    print(f'skipping {workdir}: no metrics.jsonl')
    return None
  evals = [json.loads(l) for l in open(metrics) if '"eval"' in l]
  if not evals:
    print(f'skipping {workdir}: not evaluated yet')
    return None
  return evals[-1], ml_collections.ConfigDict(checkpoint.load_config(path))


def accuracy_rows(runs: list[tuple[str, str]], params: bool = False) -> list[list]:
  """One table row per (label, workdir) that has a final evaluation: label, test accuracy, its
  difference to the first row, [params, ratio,] MMACs per input, ratio to the first row, and
  the number of test inputs. Printed as they come."""
  rows, base = [], None
  for label, workdir in runs:
    found = final_eval(workdir)
    if found is None:
      continue
    final, config = found
    from tokensparse import methods  # pylint: disable=g-import-not-at-top
    model = methods.build(config.model)
    macs = methods.macs(model, channels=1)['total'] / 1e6
    size = config.model.image_size
    shape = (1,) + ((config.model.num_frames,) if config.model.get('num_frames') else ()) + \
        (size, size, 1)
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(jax.eval_shape(
        model.init, jax.random.PRNGKey(0), np.zeros(shape, np.float32))['params']))
    acc = 100 * final['accuracy']
    base = base or (acc, macs, n)
    row = [label, f'{acc:.2f} %', f'{acc - base[0]:+.2f}']
    if params:
      row += [f'{n:,}', f'{n / base[2]:.2f}']
    rows.append(row + [f'{macs:.1f}', f'{macs / base[1]:.2f}', int(final['count'])])
    print(rows[-1], flush=True)
  return rows


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
  """About `count` round values (steps of 1, 2 or 5 times a power of ten) inside [lo, hi]."""
  raw = (hi - lo) / count
  power = 10.0 ** np.floor(np.log10(raw))
  step = power * min((m for m in (1, 2, 5, 10) if m * power >= raw), default=10)
  first = np.ceil(lo / step) * step
  return [float(np.round(v, 12)) + 0.0 for v in np.arange(first, hi + 1e-9 * step, step)]  # no -0


def line_plot(path: str, panels: list[dict], width: int = 520, height: int = 380) -> None:
  """PNG of side-by-side panels (PIL only). A panel: {'title', 'xlabel', 'ylabel', 'series':
  [{'label', 'colour', 'x', 'y', 'dashed'?, 'err'?}]}; every series gets points joined by a
  line (dashed if asked) and error bars where 'err' is given; a legend sits under each panel."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  pad, legend_rows = 58, max(len(p['series']) for p in panels)
  img = Image.new('RGB', (width * len(panels), height + 18 * legend_rows + 16), 'white')
  d = ImageDraw.Draw(img)
  for k, panel in enumerate(panels):
    x0 = k * width
    xs = [v for s in panel['series'] for v in s['x']]
    ys = [v for s in panel['series'] for v, e in zip(s['y'], s.get('err') or [0] * len(s['y']))
          for v in (v - e, v + e)]
    xlo, xhi, ylo, yhi = min(xs), max(xs), min(ys), max(ys)
    xspan, yspan = (xhi - xlo) or 1, (yhi - ylo) or 1
    xlo, xhi = xlo - 0.06 * xspan, xhi + 0.06 * xspan
    ylo, yhi = ylo - 0.08 * yspan, yhi + 0.08 * yspan

    def at(x, y):
      return (x0 + pad + (x - xlo) / (xhi - xlo) * (width - 1.4 * pad),
              height - pad - (y - ylo) / (yhi - ylo) * (height - 1.6 * pad))
    d.rectangle([at(xlo, yhi), at(xhi, ylo)], outline=(0, 0, 0))
    for xv in nice_ticks(xlo, xhi):
      (tx, ty) = at(xv, ylo)
      d.line([(tx, ty), (tx, ty - 5)], fill=(0, 0, 0))
      d.text((tx - 3 * len(f'{xv:g}'), height - pad + 4), f'{xv:g}', fill=(0, 0, 0))
    for yv in nice_ticks(ylo, yhi):
      (tx, ty) = at(xlo, yv)
      d.line([(tx, ty), (tx + 5, ty)], fill=(0, 0, 0))
      d.text((x0 + 4, ty - 5), f'{yv:g}', fill=(0, 0, 0))
    for s in panel['series']:
      pts = [at(x, y) for x, y in zip(s['x'], s['y'])]
      for a, b in zip(pts, pts[1:]):
        if s.get('dashed'):
          for t in np.linspace(0, 1, 11)[::2]:
            d.line([tuple(np.add(a, t * np.subtract(b, a))),
                    tuple(np.add(a, min(t + 0.1, 1) * np.subtract(b, a)))], fill=s['colour'],
                   width=2)
        else:
          d.line([a, b], fill=s['colour'], width=2)
      for (x, y), e, p in zip(zip(s['x'], s['y']), s.get('err') or [0] * len(pts), pts):
        if e:
          d.line([at(x, y - e), at(x, y + e)], fill=s['colour'], width=1)
        d.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=s['colour'])
    d.text((x0 + pad, 8), panel['title'], fill=(0, 0, 0))
    d.text((x0 + width // 2 - 50, height - pad + 20), panel['xlabel'], fill=(0, 0, 0))
    d.text((x0 + 4, 24), panel['ylabel'], fill=(0, 0, 0))
    for i, s in enumerate(panel['series']):
      y = height + 6 + 18 * i
      d.rectangle([x0 + pad, y + 4, x0 + pad + 16, y + 10], fill=s['colour'])
      d.text((x0 + pad + 22, y), s['label'], fill=(0, 0, 0))
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  img.save(path)


# ----------------------------------------------------------------------------- time by op class

OP_CLASSES = (('matmul', {'dot', 'convolution'}),
              ('select', {'gather', 'scatter', 'sort', 'dynamic-slice', 'dynamic-update-slice',
                          'topk'}),
              ('exp', {'exponential'}))


def op_classes(hlo_text: str) -> dict[str, str]:
  """{instruction name: class} of a compiled module's HLO text: 'matmul', 'select' or 'exp'
  (softmax and GELU) when the instruction (or a computation it calls, such as a fusion's)
  holds one of that class's opcodes (first match in OP_CLASSES order), else 'rest'. A TopK
  custom call is a select."""
  computations, current = {}, None
  for line in hlo_text.splitlines():
    if not line.startswith(' ') and line.rstrip().endswith('{'):
      current = line.split()[1 if line.startswith('ENTRY') else 0].lstrip('%')
      computations[current] = []
      continue
    m = re.match(r'\s+(?:ROOT )?%?([\w.\-]+) = (?:\(.*?\)|\S+) ([\w\-]+)\(', line)
    if m and current is not None:
      opcode = m.group(2)
      if opcode == 'custom-call' and 'TopK' in line:
        opcode = 'topk'
      computations[current].append((m.group(1), opcode, re.findall(
          r'(?:calls|to_apply|body|condition)=%?([\w.\-]+)', line)))

  def opcodes(called: list[str], seen: set) -> set[str]:
    found = set()
    for name in called:
      if name in seen:
        continue
      seen.add(name)
      for _, op, inner in computations.get(name, []):
        found |= {op} | opcodes(inner, seen)
    return found

  classes = {}
  for instructions in computations.values():
    for name, op, called in instructions:
      ops = {op} | opcodes(called, set())
      classes[name] = next((c for c, members in OP_CLASSES if ops & members), 'rest')
  return classes


def op_class_times(call, hlo_text: str, calls: int = 3, repeats: int = 3) -> dict[str, float]:
  """Milliseconds per call of `call()` (a jitted computation whose compiled HLO is `hlo_text`)
  by op class ('matmul', 'select', 'exp', 'rest': the summed time of XLA's thunks of each
  class under the JAX profiler) and 'wall' (ms per call while profiled): of the fastest of
  `repeats` profiles of `calls` calls (a profile caught by a burst of other load is dropped).
  Thunks may overlap, so the classes need not sum to the wall time."""
  import glob  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  classes = op_classes(hlo_text)
  jax.block_until_ready(call())
  best = None
  for _ in range(repeats):
    folder = tempfile.mkdtemp(prefix='tokensparse-profile-')
    try:
      with jax.profiler.trace(folder):
        start = time.perf_counter()
        for _ in range(calls):
          jax.block_until_ready(call())
        wall = (time.perf_counter() - start) / calls
      data = jax.profiler.ProfileData.from_file(
          glob.glob(os.path.join(folder, '**', '*.xplane.pb'), recursive=True)[0])
    finally:
      shutil.rmtree(folder, ignore_errors=True)
    if best is not None and wall >= best['wall'] / 1e3:
      continue
    out = {c: 0.0 for c, _ in OP_CLASSES}
    out['rest'] = 0.0
    for plane in data.planes:
      for line in plane.lines:
        for event in line.events:
          if event.name in classes:
            out[classes[event.name]] += event.duration_ns / 1e6 / calls
    out['wall'] = 1e3 * wall
    best = out
  return best
