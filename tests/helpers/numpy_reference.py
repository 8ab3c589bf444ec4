"""Direct numpy statements of the M2 equations, to check the layers against."""

import numpy as np


def dense(x, layer):
    kernel = np.asarray(layer.kernel)
    out = x @ kernel
    if layer.use_bias:
        out = out + np.asarray(layer.bias)
    return out


def layer_norm(x, layer):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + layer.epsilon) * np.asarray(layer.gamma) + np.asarray(layer.beta)


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def memory_attention(layer, q_in, k_in, v_in, mask=None):
    """`mask`: (B, Tq, Tk) bool, True where allowed; memory columns always allowed.

    The temperature is sqrt(d_k), or for `scale="sqrt_len_plus_dk"` sqrt(d_len + d_k) with d_len the
    keys each query may attend: its allowed real keys plus the m memory slots (Springenberg et al., eq. 2).
    """
    h, dk, dv, m = layer.num_heads, layer.key_dim, layer.value_dim, layer.memory_slots
    b = q_in.shape[0]
    q = dense(q_in, layer.query_dense)
    k = dense(k_in, layer.key_dense)
    v = dense(v_in, layer.value_dense)
    if m:
        mk = np.sqrt(dk) * np.repeat(np.asarray(layer.memory_keys), b, 0)
        mv = np.sqrt(m) * np.repeat(np.asarray(layer.memory_values), b, 0)
        k = np.concatenate([k, mk], 1)
        v = np.concatenate([v, mv], 1)
    q = q.reshape(b, -1, h, dk).transpose(0, 2, 1, 3)
    k = k.reshape(b, -1, h, dk).transpose(0, 2, 3, 1)
    v = v.reshape(b, -1, h, dv).transpose(0, 2, 1, 3)
    tq, tk = q_in.shape[1], k_in.shape[1]
    if getattr(layer, "scale", "sqrt_dk") == "sqrt_len_plus_dk":
        allowed = np.broadcast_to(mask, (b, tq, tk)).sum(-1) if mask is not None else np.full((b, tq), tk)
        temperature = np.sqrt(allowed + m + dk)[:, None, :, None]
    else:
        temperature = np.sqrt(dk)
    att = q @ k / temperature
    if mask is not None:
        tk = k_in.shape[1]
        att[:, :, :, :tk] = np.where(mask[:, None], att[:, :, :, :tk], -np.inf)
    out = (softmax(att) @ v).transpose(0, 2, 1, 3).reshape(b, -1, h * dv)
    return dense(out, layer.output_dense)
