"""Imports flow one way: arrays and layers -> backbone -> objectives, MAC counting and drawing
-> methods -> tools. The graph is built from each file's AST, module-level and deferred
imports alike, so an import hidden inside a function counts too."""
import ast
import os
import re

import pytest

ROOT = os.path.join(os.path.dirname(__file__), '..')
PACKAGE = os.path.join(ROOT, 'tokensparse')

# Bottom to top. A module not listed by prefix is a tool (layer 4); so is any command-line
# entry point (a file with `if __name__ == '__main__'`), wherever it lives.
LAYERS = (
    ('arrays', ('tokensparse.fields', 'tokensparse.functional', 'tokensparse.losses',
                'tokensparse.cpu', 'tokensparse.data')),
    ('backbone', ('tokensparse.backbone',)),
    ('primitives', ('tokensparse.objectives', 'tokensparse.flops', 'tokensparse.drawing')),
    ('methods', ('tokensparse.methods',)),
)
TOOLS = len(LAYERS)


def modules() -> dict[str, str]:
  """{'tokensparse.a.b': path} for every file of the package."""
  out = {}
  for folder, _, files in os.walk(PACKAGE):
    for f in files:
      if f.endswith('.py'):
        path = os.path.join(folder, f)
        parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
        out['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
  return out


def import_graph(mods: dict[str, str]) -> dict[str, set[str]]:
  """module -> the package modules it imports (its own parent packages excluded: they run
  before it anyway)."""
  def resolve(name):
    while name and name not in mods:
      name = name.rpartition('.')[0]
    return name or None

  graph = {}
  for m, path in mods.items():
    is_pkg = path.endswith('__init__.py')
    edges = set()
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        if node.level:
          base = m.split('.') if is_pkg else m.split('.')[:-1]
          base = base[:len(base) - (node.level - 1)]
          prefix = '.'.join(base + ([node.module] if node.module else []))
        else:
          prefix = node.module or ''
        targets = [f'{prefix}.{a.name}' if f'{prefix}.{a.name}' in mods else prefix
                   for a in node.names]
      else:
        continue
      for t in targets:
        r = resolve(t) if t.startswith('tokensparse') else None
        if r and r != m and not m.startswith(r + '.'):
          edges.add(r)
    graph[m] = edges
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def layer(module: str, path: str) -> int:
  if re.search(r"^if __name__ == .__main__.:", open(path).read(), re.M):
    return TOOLS
  for i, (_, prefixes) in enumerate(LAYERS):
    if any(module == p or module.startswith(p + '.') for p in prefixes):
      return i
  return TOOLS


def test_cycle_finder_names_a_circle():
  graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
  assert cycles(graph) == [['a', 'b', 'c']]


def test_no_import_cycle():
  found = cycles(import_graph(modules()))
  assert not found, 'import circles: ' + '; '.join(' -> '.join(c) for c in found)


def test_imports_only_flow_down():
  mods = modules()
  names = [n for n, _ in LAYERS] + ['tools']
  upward = []
  for m, targets in import_graph(mods).items():
    for t in targets:
      if layer(t, mods[t]) > layer(m, mods[m]):
        upward.append(f'{m} ({names[layer(m, mods[m])]}) imports {t} '
                      f'({names[layer(t, mods[t])]})')
  assert not upward, '\n'.join(upward)


def test_a_method_imports_no_other_method():
  mods = modules()
  crossing = []
  for m, targets in import_graph(mods).items():
    parts = m.split('.')
    if len(parts) < 3 or parts[1] != 'methods' or parts[2] == 'base' or \
        layer(m, mods[m]) == TOOLS:
      continue
    for t in targets:
      tp = t.split('.')
      if len(tp) >= 3 and tp[1] == 'methods' and tp[2] not in (parts[2], 'base'):
        crossing.append(f'{m} imports {t}')
  assert not crossing, '\n'.join(crossing)


@pytest.mark.parametrize('module,expected', [('tokensparse.functional', 'arrays'),
                                             ('tokensparse.backbone.layers', 'backbone'),
                                             ('tokensparse.flops', 'primitives'),
                                             ('tokensparse.methods.tome.ops', 'methods'),
                                             ('tokensparse.methods.vtp.prune', 'tools'),
                                             ('tokensparse.inference', 'tools')])
def test_layers_are_assigned_as_documented(module, expected):
  mods = modules()
  names = [n for n, _ in LAYERS] + ['tools']
  assert names[layer(module, mods[module])] == expected
