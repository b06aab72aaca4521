"""Golden regression: every architecture and every shipped pretrained optimizer keep their math.

Speed work on the update rules (fusing reductions, re-laying out gates) may change float rounding
but never the function. For each optimizer, three updates on a fixed two-leaf tree (a 2-D and a
1-D leaf, each step's gradient taken at the updated params) are summarised per leaf and per step
by three numbers -- sum, sum of |u| and a sum weighted by a fixed random vector (which catches
permuted or swapped entries) -- and compared with the numbers recorded from the code as it was
before those optimizations. The final state is summarised the same way.

Regenerate (only for an intended change of an update rule, never to make a speed-up pass):
    .venv/bin/python -m tests.learned_opt.test_golden_updates
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import learned_opt as lo

NUM_STEPS = 100
NUM_UPDATES = 3
ARCHITECTURES = ("learned_adam", "mlp", "adafac_mlp", "lstm", "hyper", "norm_mlp")
PRETRAINED = ("mlp_digits_mlp", "adafac_mlp_mnist1d_mlp", "adafac_mlp_mixed_valid", "norm_mlp_mix")
# "NAME+perturbed": the default theta plus fixed noise (so the networks, near zero at init,
# contribute), param_scale_exponent 0.5 and weight_decay 0.01 (so the shared parameter-scale and
# weight-decay policies, inactive at the default theta, count).
PERTURBED = tuple(f"{name}+perturbed" for name in ARCHITECTURES)
ALL_CASES = ARCHITECTURES + PERTURBED + PRETRAINED


def golden_params() -> dict:
    rng = np.random.default_rng(123)
    return {"w": jnp.asarray(rng.normal(size=(5, 7)) * 0.3, jnp.float32),
            "b": jnp.asarray(rng.normal(size=(7,)) * 0.1, jnp.float32)}


def golden_loss(params) -> jax.Array:
    """A quadratic with a different curvature per entry, so gradients vary across entries."""
    total = 0.0
    for i, p in enumerate(jax.tree.leaves(params)):
        curvature = 1.0 + jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape) / p.size
        total = total + jnp.sum(0.5 * (i + 1) * curvature * jnp.square(p - 0.05))
    return total


def _summary(x: jax.Array) -> list[float]:
    x = np.asarray(x, np.float64).ravel()
    weights = np.random.default_rng(x.size).uniform(-1.0, 1.0, size=x.size)
    return [float(x.sum()), float(np.abs(x).sum()), float((x * weights).sum())]


def _lopt_theta_wd(name: str):
    """(architecture, theta, weight_decay) of a golden case."""
    if name in PRETRAINED:
        lopt, theta, _ = lo.load_pretrained_theta(name)
        return lopt, theta, 0.0
    arch, _, variant = name.partition("+")
    lopt = lo.get_lopt(arch)
    theta = lopt.init(jax.random.key(0))
    if variant == "perturbed":
        leaves, treedef = jax.tree.flatten(theta)
        rng = np.random.default_rng(7)
        theta = treedef.unflatten([x + 0.1 * rng.normal(size=x.shape).astype(np.float32)
                                   for x in leaves])
        theta = {**theta, "param_scale_exponent": jnp.float32(0.5)}
        return lopt, theta, 0.01
    return lopt, theta, 0.0


@functools.cache
def _step(lopt: lo.LearnedOptimizer, weight_decay: float):
    """One compiled update per (architecture, weight decay), theta an argument: the default and
    the pretrained theta of an architecture share it."""
    return jax.jit(lambda theta, g, s, p, v: lopt.optimizer(
        theta, num_steps=_horizon(lopt), weight_decay=weight_decay).update(g, s, p, value=v))


def _horizon(lopt: lo.LearnedOptimizer) -> int | None:
    """NUM_STEPS, except for optimizers whose default rate follows a schedule over the horizon
    (NormMLPLOpt's warmup-cosine): their per-step rule is recorded at a constant rate."""
    return None if getattr(lopt, "default_schedule", "constant") != "constant" else NUM_STEPS


def record(name: str) -> dict:
    """{"updates": [[step][leaf] summary], "state": [per-leaf-field summary]} for `name`."""
    lopt, theta, weight_decay = _lopt_theta_wd(name)
    step = _step(lopt, weight_decay)
    params = golden_params()
    state = lopt.optimizer(theta, num_steps=_horizon(lopt)).init(params)
    updates_summary = []
    for _ in range(NUM_UPDATES):
        loss, grads = jax.value_and_grad(golden_loss)(params)
        updates, state = step(theta, grads, state, params, loss)
        updates_summary.append([_summary(u) for u in jax.tree.leaves(updates)])
        params = optax.apply_updates(params, updates)
    state_summary = [_summary(_recorded_layout(lopt, field, x))
                     for field, tree in zip(state.per_leaf._fields, state.per_leaf, strict=True)
                     for x in jax.tree.leaves(tree)]
    return {"updates": updates_summary, "state": state_summary}


# State fields that stack K per-entry arrays (accumulators at K decays, LSTM hidden units). They
# were recorded with the stack on a trailing axis; the state now keeps it leading (see
# learned_opt/features.py), a change of memory layout only, so summaries move it back.
STACKED_FIELDS = {"mlp": ("momenta",), "hyper": ("momenta",), "lstm": ("h", "c"),
                  "adafac_mlp": ("momenta", "v_row", "v_col")}


def _recorded_layout(lopt: lo.LearnedOptimizer, field: str, x: jax.Array) -> jax.Array:
    if field in STACKED_FIELDS.get(lopt.name, ()) and x.ndim >= 2:
        return jnp.moveaxis(x, 0, -1)
    return x


# Recorded from commit a7b4875 (before the update-speed work) with `record`.
GOLDEN: dict = {
    "learned_adam": {
        "updates": [
            [(-0.001, 0.0069999985, -0.0026822657),
             (0.00099999993, 0.034999996, -0.0026607426)],
            [(-0.00099834905, 0.0069955139, -0.0026806721),
             (0.00099924486, 0.034982957, -0.002652605)],
            [(-0.00099550979, 0.0069879366, -0.0026779668),
             (0.00099820015, 0.034952569, -0.0026371302)],
        ],
        "state": [
            (-0.046990051, 0.21336505, 0.12818115),
            (-0.56094984, 6.9179009, 0.88808381),
            (0.00046642274, 0.00046642274, -0.00028918473),
            (0.091908245, 0.091908245, -0.0074937525),
        ],
    },
    "mlp": {
        "updates": [
            [(-0.000977327, 0.0069534405, -0.0026622018),
             (0.0010364325, 0.034823252, -0.0026525913)],
            [(-0.00097668939, 0.0069506655, -0.0026613434),
             (0.001033847, 0.034811315, -0.0026451195)],
            [(-0.00097363698, 0.006944234, -0.0026590217),
             (0.0010361748, 0.034784921, -0.0026301697)],
        ],
        "state": [
            (-0.20417162, 0.92264637, -0.39376755),
            (-2.4324062, 29.980873, -1.1592383),
            (0.00046647548, 0.00046647548, -0.00028920609),
            (0.09191222, 0.09191222, -0.0074940445),
        ],
    },
    "adafac_mlp": {
        "updates": [
            [(-0.0010225249, 0.0069854034, -0.0026721977),
             (0.00016639785, 0.031077452, -0.0024875136)],
            [(-0.0010218757, 0.0069830312, -0.0026715255),
             (0.00016125431, 0.031087413, -0.0024869341)],
            [(-0.0010187546, 0.006976389, -0.0026692337),
             (0.00016227788, 0.031091025, -0.0024865732)],
        ],
        "state": [
            (-0.20427221, 0.92258013, -0.39377132),
            (-2.4399725, 30.000576, -1.1561588),
            (0.047221709, 0.047221709, 0.027512871),
            (1.3287303, 1.3287303, 0.35829415),
            (0, 0, 0),
            (1.8602224, 1.8602224, 0.66921146),
        ],
    },
    "lstm": {
        "updates": [
            [(-0.0009948354, 0.0069966634, -0.0026816011),
             (0.001026949, 0.034988014, -0.002662263)],
            [(-0.00099592528, 0.006992536, -0.0026802581),
             (0.0010222213, 0.034961722, -0.0026607942)],
            [(-0.00099700654, 0.0069902315, -0.002679578),
             (0.0010173577, 0.034944728, -0.0026598755)],
        ],
        "state": [
            (0.82585631, 13.667372, 0.66248914),
            (-2.7639428, 63.110589, -0.11114577),
            (-3.5802127, 35.605441, 2.2165146),
            (-32.694888, 173.54306, -4.3790938),
        ],
    },
    "hyper": {
        "updates": [
            [(-0.00096601842, 0.0069908003, -0.002678402),
             (0.001156101, 0.03499869, -0.0026680187)],
            [(-0.00096468837, 0.0069877824, -0.0026773886),
             (0.0011551582, 0.034988294, -0.0026603917)],
            [(-0.00096213969, 0.006981213, -0.0026750942),
             (0.0011536593, 0.034961833, -0.0026452112)],
        ],
        "state": [
            (-0.20414166, 0.92255883, -0.39372917),
            (-2.431814, 29.980058, -1.1592686),
            (0.00046642365, 0.00046642365, -0.0002891672),
            (0.091909483, 0.091909483, -0.0074935105),
            (-0.25821742, 2.5485507, 0.18638532),
            (-0.22064747, 2.7026977, 0.011132046),
            (-0.97439023, 5.7938317, 0.056677215),
            (-0.80598588, 6.2864249, -0.38912348),
        ],
    },
    "learned_adam+perturbed": {
        "updates": [
            [(-0.00032959576, 0.002291769, -0.00087905037),
             (0.0005480806, 0.019675612, -0.0014974267)],
            [(-0.00032900777, 0.002288286, -0.00087772978),
             (0.00054739742, 0.019655783, -0.0014942747)],
            [(-0.00032831851, 0.0022845243, -0.00087631134),
             (0.00054657139, 0.01963268, -0.001489571)],
        ],
        "state": [
            (-0.045630413, 0.21008053, 0.12588774),
            (-0.54774431, 6.7625688, 0.86776029),
            (0.00043131897, 0.00043131897, -0.000266504),
            (0.084280168, 0.084280168, -0.0068677694),
        ],
    },
    "mlp+perturbed": {
        "updates": [
            [(0.00074978862, 0.0013872815, -0.00051150587),
             (0.0089078961, 0.013478213, -0.0014856596)],
            [(0.00072151389, 0.0014142841, -0.00052387666),
             (0.0086813847, 0.013725817, -0.0015008711)],
            [(0.00070629334, 0.0014261771, -0.00053098894),
             (0.0085630327, 0.013827556, -0.0015051912)],
        ],
        "state": [
            (-0.20069709, 0.93504857, -0.39718593),
            (-2.3963722, 30.079986, -1.1642841),
            (0.00047198077, 0.00047198077, -0.00029097398),
            (0.092202565, 0.092202565, -0.0074946143),
        ],
    },
    "adafac_mlp+perturbed": {
        "updates": [
            [(0.00052467734, 0.00052467734, -2.1275725e-05),
             (0.0040867553, 0.0040867553, -0.00031321601)],
            [(0.00052507024, 0.00052507024, -2.8656942e-05),
             (0.0041153274, 0.0041153274, -0.00032675356)],
            [(0.00052885815, 0.00052885815, -3.0096366e-05),
             (0.0041435931, 0.0041435931, -0.00033115272)],
        ],
        "state": [
            (-0.2127801, 0.99168773, -0.41262135),
            (-2.5573117, 31.865026, -1.1838117),
            (0.052401625, 0.052401625, 0.031083343),
            (1.4601936, 1.4601936, 0.39242206),
            (0, 0, 0),
            (2.0442709, 2.0442709, 0.75459246),
        ],
    },
    "lstm+perturbed": {
        "updates": [
            [(3.0312774e-05, 0.0017568479, -0.00063099673),
             (0.0023400608, 0.015328033, -0.0012128761)],
            [(1.7810249e-05, 0.0017215082, -0.00062318236),
             (0.0022379376, 0.014970197, -0.001188745)],
            [(1.4996767e-05, 0.0016991836, -0.00061829458),
             (0.0022155066, 0.01475139, -0.0011719668)],
        ],
        "state": [
            (-1.6377964, 12.085344, 0.63557475),
            (-14.440923, 59.122852, -0.048278524),
            (-9.0025217, 34.240896, 2.8560582),
            (-60.895445, 176.14359, -3.4541611),
        ],
    },
    "hyper+perturbed": {
        "updates": [
            [(-0.00049164114, 0.0024287585, -0.00095714155),
             (-0.00021493109, 0.020303096, -0.0015527991)],
            [(-0.00050427127, 0.0024881338, -0.00098044611),
             (-0.00022329326, 0.020735358, -0.0015836734)],
            [(-0.00050967088, 0.0025141601, -0.00099074128),
             (-0.00022591202, 0.020932844, -0.0015953304)],
        ],
        "state": [
            (-0.20334365, 0.93272912, -0.39706788),
            (-2.4385218, 30.047604, -1.1603444),
            (0.00047124532, 0.00047124532, -0.00029126829),
            (0.092097617, 0.092097617, -0.0075065907),
            (-0.52124746, 2.3160001, -0.18617655),
            (-0.52897547, 2.4609969, -0.34360664),
            (-1.7256122, 5.3199116, -0.41254392),
            (-1.6705671, 5.7245841, -0.73580138),
        ],
    },
    "mlp_digits_mlp": {
        "updates": [
            [(0.032614958, 0.28649476, -0.073701551),
             (0.12100764, 0.45279838, -0.030588042)],
            [(0.028452834, 0.20881481, -0.05856667),
             (0.16500175, 0.50469067, 0.0061363719)],
            [(0.028034033, 0.13251724, -0.050881238),
             (0.15106663, 0.5257367, 0.0076942346)],
        ],
        "state": [
            (-0.11955336, 0.52769854, -0.19376211),
            (-1.8022914, 28.051857, -1.1430043),
            (0.00033633428, 0.00033633428, -0.00020875737),
            (0.08802212, 0.08802212, -0.0072594534),
        ],
    },
    "adafac_mlp_mnist1d_mlp": {
        "updates": [
            [(-0.075976565, 0.63198434, -0.22108827),
             (-0.15727341, 1.1938271, -0.070010709)],
            [(0.15830646, 0.33903267, -0.064607673),
             (-0.18866575, 1.3074022, -0.073572978)],
            [(0.07753911, 0.21218077, -0.020555297),
             (-0.12850996, 1.3183502, -0.089712644)],
        ],
        "state": [
            (-0.096201972, 0.36312691, -0.021509955),
            (-3.3505595, 23.708801, -1.1334896),
            (0.043667308, 0.043667308, 0.025081101),
            (2.2971599, 2.2971599, 0.56586288),
            (0, 0, 0),
            (3.2160237, 3.2160237, 1.4700237),
        ],
    },
    "adafac_mlp_mixed_valid": {  # recorded when it was shipped, with the same `record`
        "updates": [
            [(-0.039104593, 0.062805905, -0.029289267),
             (-0.11703422, 0.2691075, 0.011325256)],
            [(-0.013916067, 0.035200844, -0.014314539),
             (-0.07981582, 0.2074204, 0.0085602425)],
            [(-0.0026479141, 0.025333501, -0.0084972427),
             (-0.057571371, 0.19812586, 0.0064755161)],
        ],
        "state": [
            (-0.25297008, 0.77177503, -0.38573269),
            (-2.7613026, 27.413507, -1.0607383),
            (0.10230686, 0.10230686, 0.066302767),
            (3.0063639, 3.0063639, 0.75036617),
            (0, 0, 0),
            (4.2089095, 4.2089095, 1.8096031),
        ],
    },
}

# NormMLPLOpt (#18): recorded with `record` when it was added (its default theta, the perturbed
# variant, and the shipped norm_mlp_mix weights).
GOLDEN.update({
    "norm_mlp": {
        "updates": [
            [(-0.0030902538, 0.020999797, -0.0080426839),
             (-0.0087986781, 0.094165463, -0.0028901814)],
            [(-0.0030766383, 0.020999829, -0.0080429848),
             (-0.0088208141, 0.094158556, -0.0027004817)],
            [(-0.0030499683, 0.020999675, -0.0080429789),
             (-0.0086415359, 0.094305956, -0.0021493396)],
        ],
        "state": [
            (-0.053435147, 0.23267295, 0.021318263),
            (-0.63916872, 7.6977577, -0.82436764),
            (0.00045195676, 0.00045195676, -0.00028302074),
            (0.091191534, 0.091191534, -0.0075275568),
            (0.00045195091, 0.00045195091, -0.00028301707),
            (0.013027194, 0.013027194, -0.0042984913),
            (0, 0, 0),
            (0.018238071, 0.018238071, 0.00033405301),
        ],
    },
    "norm_mlp+perturbed": {
        "updates": [
            [(0.0067653483, 0.01814429, -0.0061476315),
             (0.023143974, 0.090521989, -0.007092732)],
            [(0.0067461805, 0.018167511, -0.0061988852),
             (0.022954311, 0.090575221, -0.0064994869)],
            [(0.0067033917, 0.018211549, -0.006280294),
             (0.022767369, 0.089827759, -0.0046817755)],
        ],
        "state": [
            (-0.049184234, 0.23398426, 0.022244456),
            (-0.60735108, 7.6996633, -0.82901544),
            (0.00045396798, 0.00045396798, -0.00027971905),
            (0.091342539, 0.091342539, -0.0073060603),
            (0.00045396209, 0.00045396209, -0.00027971541),
            (0.013048766, 0.013048766, -0.0042869989),
            (0, 0, 0),
            (0.018268272, 0.018268272, 0.00031828406),
        ],
    },
    "norm_mlp_mix": {
        "updates": [
            [(-0.0030134206, 0.020978999, -0.0082697224),
             (-0.012460365, 0.093359665, -0.0022897959)],
            [(-0.0029926752, 0.020976924, -0.0082716172),
             (-0.012373792, 0.093541278, -0.0021579738)],
            [(-0.0029586465, 0.020973426, -0.0082724066),
             (-0.011872875, 0.094297977, -0.0017755142)],
        ],
        "state": [
            (-0.053336261, 0.232637, 0.021280672),
            (-0.64272113, 7.6984299, -0.82414829),
            (0.00045105249, 0.00045105249, -0.00028225132),
            (0.091157876, 0.091157876, -0.0075311162),
            (0.0004510467, 0.0004510467, -0.00028224771),
            (0.013022386, 0.013022386, -0.0042938808),
            (0, 0, 0),
            (0.01823134, 0.01823134, 0.00032951534),
        ],
    },
})

@pytest.mark.parametrize("name", ALL_CASES)
def test_updates_match_golden(name):
    got, want = record(name), GOLDEN[name]
    for kind in ("updates", "state"):
        g, w = np.asarray(got[kind]), np.asarray(want[kind])
        assert g.shape == w.shape, (kind, g.shape, w.shape)
        # Sums of small updates can cancel: tolerance relative to the sum of magnitudes.
        scale = np.abs(w[..., 1:2]) + 1e-30
        np.testing.assert_allclose(g / scale, w / scale, rtol=0, atol=1e-5,
                                   err_msg=f"{name} {kind}")


if __name__ == "__main__":
    import json

    print(json.dumps({name: record(name) for name in ALL_CASES}))
