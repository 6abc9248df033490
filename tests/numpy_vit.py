"""An independent numpy forward pass of a timm-named ViT/DeiT state dict (the test oracle).

Written from the DeiT description (fused qkv, OIHW conv, erf GELU, pre-LN, eps 1e-6), not
from tokensparse code, so converter and model are checked against something separate.
"""
import math

import numpy as np

_erf = np.vectorize(math.erf)


def layer_norm(x, w, b, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
  return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def embed(sd, images):
  """images [B, H, W, C] -> tokens [B, prefix + N, D] with position embeddings."""
  w = sd['patch_embed.proj.weight']
  d, c, p, _ = w.shape
  b, h, wd, _ = images.shape
  patches = images.reshape(b, h // p, p, wd // p, p, c).transpose(0, 1, 3, 5, 2, 4)
  x = patches.reshape(b, -1, c * p * p) @ w.reshape(d, -1).T + sd['patch_embed.proj.bias']
  prefix = [np.broadcast_to(sd['cls_token'], (b, 1, d))] if 'cls_token' in sd else []
  if 'dist_token' in sd:
    prefix.append(np.broadcast_to(sd['dist_token'], (b, 1, d)))
  return np.concatenate(prefix + [x], 1) + sd['pos_embed']


def attention_half(sd, i, x, num_heads, bias=None):
  """x + Attn(LN1(x)) -> (x, keys [B, heads, N, hd], attention [B, heads, N, N]); `bias`
  [B, N] is added to every row of the logits (per key)."""
  g = lambda name: sd[f'blocks.{i}.{name}']
  b, n, _ = x.shape
  y = layer_norm(x, g('norm1.weight'), g('norm1.bias'))
  qkv = (y @ g('attn.qkv.weight').T + g('attn.qkv.bias')).reshape(b, n, 3, num_heads, -1)
  q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # each [B, heads, N, hd]
  logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
  if bias is not None:
    logits = logits + bias[:, None, None, :]
  a = softmax(logits)
  o = (a @ v).transpose(0, 2, 1, 3).reshape(b, n, -1)
  return x + o @ g('attn.proj.weight').T + g('attn.proj.bias'), k, a


def mlp_half(sd, i, x):
  g = lambda name: sd[f'blocks.{i}.{name}']
  y = layer_norm(x, g('norm2.weight'), g('norm2.bias'))
  y = gelu(y @ g('mlp.fc1.weight').T + g('mlp.fc1.bias'))
  return x + y @ g('mlp.fc2.weight').T + g('mlp.fc2.bias')


def head(sd, x):
  x = layer_norm(x, sd['norm.weight'], sd['norm.bias'])
  pooled = x[:, 0] if 'cls_token' in sd else x.mean(1)   # no class token: the mean token
  logits = pooled @ sd['head.weight'].T + sd['head.bias']
  if 'head_dist.weight' in sd:
    logits = (logits + x[:, 1] @ sd['head_dist.weight'].T + sd['head_dist.bias']) / 2
  return logits


def forward(sd, images, num_heads, depth, between=None, bias=None):
  """images [B, H, W, C] (float64) -> logits [B, classes] (distilled: mean of both heads).

  Hooks for method oracles: `bias(i)` -> a per-key logit bias [B, N] for block i (or None);
  `between(i, x, keys, attention)` -> the tokens the MLP half of block i sees."""
  sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
  x = embed(sd, images)
  for i in range(depth):
    x, k, a = attention_half(sd, i, x, num_heads, bias(i) if bias else None)
    if between is not None:
      x = between(i, x, k, a)
    x = mlp_half(sd, i, x)
  return head(sd, x)


def random_timm_state_dict(rng, *, width, depth, num_heads, mlp_dim, patch, channels,
                           grid, num_classes, distilled=False, class_token=True):
  """A timm-named state dict with random weights (scaled so activations stay O(1))."""
  r = lambda *s: (rng.standard_normal(s) * 0.1).astype(np.float32)
  n = grid * grid + (2 if distilled else 1)
  sd = {'cls_token': r(1, 1, width), 'pos_embed': r(1, n, width),
        'patch_embed.proj.weight': r(width, channels, patch, patch),
        'patch_embed.proj.bias': r(width), 'norm.weight': 1 + r(width), 'norm.bias': r(width),
        'head.weight': r(num_classes, width), 'head.bias': r(num_classes)}
  if distilled:
    sd.update({'dist_token': r(1, 1, width), 'head_dist.weight': r(num_classes, width),
               'head_dist.bias': r(num_classes)})
  for i in range(depth):
    p = f'blocks.{i}.'
    sd.update({p + 'norm1.weight': 1 + r(width), p + 'norm1.bias': r(width),
               p + 'attn.qkv.weight': r(3 * width, width), p + 'attn.qkv.bias': r(3 * width),
               p + 'attn.proj.weight': r(width, width), p + 'attn.proj.bias': r(width),
               p + 'norm2.weight': 1 + r(width), p + 'norm2.bias': r(width),
               p + 'mlp.fc1.weight': r(mlp_dim, width), p + 'mlp.fc1.bias': r(mlp_dim),
               p + 'mlp.fc2.weight': r(width, mlp_dim), p + 'mlp.fc2.bias': r(width)})
  if not class_token:  # the same draws, then no class token (a mean-token classifier)
    sd.pop('cls_token')
    sd['pos_embed'] = sd['pos_embed'][:, 1:]
  return sd
