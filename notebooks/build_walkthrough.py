"""Write notebooks/walkthrough.ipynb: the recipe step by step with the shipped models.

The notebook is generated from this script so that its text is reviewable as a diff and it
is always committed without outputs. Run from the repository root:

    python notebooks/build_walkthrough.py

`tests/system/test_notebook.py` checks that the committed notebook matches this script and that it
executes without error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOK = Path(__file__).resolve().with_name("walkthrough.ipynb")


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip())


def code(text: str) -> nbformat.NotebookNode:
    return new_code_cell(text.strip())


CELLS: list[nbformat.NotebookNode] = [
    md(r"""
# DiffuMNIST walkthrough: diffusion models from scratch, step by step

This notebook retraces the recipe this package reproduces — UC Berkeley CS180 (Fall 2024),
*Diffusion Models from Scratch*, part B, restated precisely in `SPEC.md` — with the
**shipped** models (`diffumnist.load_pretrained`). Nothing is trained here, and the whole
notebook runs in about a minute on a laptop CPU.

1. the forward process and the single-step denoiser (recipe, Part 1);
2. the DDPM noise schedule and $q(x_t \mid x_0)$ (Part 2);
3. sampling from the time-conditioned UNet (Algorithm 2);
4. the class-conditioned UNet with classifier-free guidance;
5. measuring samples with the shipped MNIST judge.

MNIST is read from `$DIFFUMNIST_DATA` (torchvision's layout, `MNIST/raw/`). Pixels are in
$[0, 1]$, as `ToTensor` gives them. `MODEL_CARD.md` says how each shipped file was trained.
"""),
    code(r"""
%matplotlib inline
import time

import matplotlib.pyplot as plt
import torch

import diffumnist
from diffumnist.data import load_split, to_unit
from diffumnist.diffusion import GaussianDiffusion
from diffumnist.evaluate import format_scores, generate, score_samples
from diffumnist.sampling import SamplingConfig

START = time.perf_counter()


def show_rows(rows, row_titles=(), col_titles=(), size=1.1):
    # rows: list of float tensors (N, 1, 28, 28) or (N, 28, 28); one figure row each.
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    _fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(size * n_cols, size * n_rows + 0.3), squeeze=False
    )
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(row[j].float().squeeze(), cmap="gray", vmin=0, vmax=1)
            if i == 0 and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=9)
        if i < len(row_titles):
            axes[i, 0].set_ylabel(row_titles[i], fontsize=9)
    plt.tight_layout()
    plt.show()
"""),
    md(r"""
## 1. The forward process and a single-step denoiser

The simplest corruption adds Gaussian noise at one level $\sigma$:

$$z = x + \sigma\,\epsilon, \qquad \epsilon \sim \mathcal N(0, I).$$

The recipe's Part 1 trains an `UnconditionalUNet` (D = 128) to undo it in **one step**,
minimising $\lVert D_\theta(z) - x \rVert^2$ at $\sigma = 0.5$ only (batch 256, Adam
$10^{-4}$, 5 epochs). Below, one test digit is noised at the recipe's seven levels and
handed to the shipped denoiser. Away from $\sigma = 0.5$ the denoiser is out of
distribution: at small $\sigma$ it still cleans well, at large $\sigma$ it starts to invent
strokes — the motivation for a model that knows *how much* noise it is looking at.
"""),
    code(r"""
test_images, test_labels = load_split("test")  # uint8 (10000, 28, 28), int64 (10000,)
x = to_unit(test_images[:1])  # (1, 1, 28, 28) in [0, 1]
print("test digit label:", test_labels[0].item())

sigmas = [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0]
generator = torch.Generator().manual_seed(0)
noise = torch.randn(x.shape, generator=generator)
noisy = torch.cat([x + sigma * noise for sigma in sigmas])  # (7, 1, 28, 28)

denoiser = diffumnist.load_pretrained("denoiser")
denoised = denoiser.denoise(noisy)  # (7, 1, 28, 28), unclamped

for sigma, z, d in zip(sigmas, noisy, denoised, strict=True):
    mse_in, mse_out = (z - x[0]).square().mean(), (d - x[0]).square().mean()
    print(f"sigma {sigma:.1f}: MSE noisy {mse_in:.4f} -> denoised {mse_out:.4f}")
show_rows(
    [noisy.clamp(0, 1), denoised.clamp(0, 1)],
    row_titles=["noisy", "denoised"],
    col_titles=[f"σ = {s}" for s in sigmas],
)
"""),
    md(r"""
## 2. DDPM: the noise schedule and $q(x_t \mid x_0)$

DDPM (Ho et al., 2020) spreads the corruption over $T = 300$ small steps with
$\beta_t$ = `linspace(1e-4, 0.02, T)`, $\alpha_t = 1 - \beta_t$ and
$\bar\alpha_t = \prod_{s \le t} \alpha_s$ (with $\bar\alpha_0 = 1$; timesteps run
$t = 1 \dots T$ and the network sees $t / T$). Any $x_t$ can be drawn from $x_0$ in one shot
(Eq. 4 of the paper, `GaussianDiffusion.q_sample`):

$$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1 - \bar\alpha_t}\,\epsilon .$$

**Training (Algorithm 1).** Take $x_0$ from the training set, $t \sim \mathcal U\{1 \dots T\}$,
$\epsilon \sim \mathcal N(0, I)$, and minimise $\lVert \epsilon - \epsilon_\theta(x_t, t)
\rVert^2$ (`GaussianDiffusion.training_loss`). The recipe: D = 64, batch 128, Adam
$10^{-3}$ decayed to $10^{-4}$ over 20 epochs.
"""),
    code(r"""
diffusion = GaussianDiffusion()  # the recipe: T = 300, betas 1e-4 ... 0.02
steps = torch.arange(1, diffusion.num_timesteps + 1)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3))
ax1.plot(steps, diffusion.betas)
ax1.set(title=r"$\beta_t$", xlabel="t")
ax2.plot(steps, diffusion.alphas_cumprod, label=r"$\bar\alpha_t$ (signal variance)")
ax2.plot(steps, 1 - diffusion.alphas_cumprod, label=r"$1 - \bar\alpha_t$ (noise variance)")
ax2.set(title=r"$\bar\alpha_t$", xlabel="t")
ax2.legend()
plt.tight_layout()
plt.show()
alpha_bar_T = diffusion.alphas_cumprod[-1].item()
print(f"alpha_bar_T = {alpha_bar_T:.4f}: x_T keeps sqrt(alpha_bar_T) = {alpha_bar_T**0.5:.2f}")
print("of the digit's amplitude; sampling nonetheless starts from pure noise x_T ~ N(0, I)")

ts = [1, 25, 50, 100, 150, 200, 250, 300]
eps = torch.randn((len(ts), 1, 28, 28), generator=torch.Generator().manual_seed(0))
x_t = diffusion.q_sample(x.expand(len(ts), -1, -1, -1), torch.tensor(ts), eps)
show_rows([x_t.clamp(0, 1)], col_titles=[f"t = {t}" for t in ts])
"""),
    md(r"""
### What the time-conditioned UNet sees

The time-conditioned UNet adds $t/T$ through two small MLPs (`FCBlock`s) at the bottleneck
and after the first up-block. From a noised $x_t$ it predicts $\epsilon$, which gives a
one-shot estimate of the clean digit by inverting Eq. 4:
$\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta) / \sqrt{\bar\alpha_t}$.
One step is blurry at large $t$; the sampler below refines it step by step.
"""),
    code(r"""
time_model = diffumnist.load_pretrained("time")
with torch.inference_mode():
    t = torch.tensor(ts)
    eps_pred = time_model.net(x_t, time_model.diffusion.time_fraction(t))
    x0_pred = time_model.diffusion.predict_x0_from_eps(x_t, t, eps_pred)
show_rows(
    [x_t.clamp(0, 1), x0_pred.clamp(0, 1)],
    row_titles=["x_t", "x̂0 in one step"],
    col_titles=[f"t = {t}" for t in ts],
)
"""),
    md(r"""
## 3. Sampling the time-conditioned model (Algorithm 2)

Start from $x_T \sim \mathcal N(0, I)$; for $t = T, \dots, 1$, with
$z \sim \mathcal N(0, I)$ if $t > 1$ else $0$:

$$\hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta(x_t, t)}{\sqrt{\bar\alpha_t}},
\qquad
x_{t-1} = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,\hat x_0
 + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t + \sqrt{\beta_t}\,z .$$

The noise variance is $\beta_t$ and $\hat x_0$ is not clipped (`SPEC.md`). The recipe's
sampler is exactly this, over all 300 steps, and it is the default:

```python
samples, animation = time_model.sample(n=10, seed=0)  # sampler="ddpm": all T = 300 steps
```

To keep this notebook quick we use the package's DPM-Solver++(2M) with 20 steps,
`sampler="dpmpp", steps=20`: same network, same schedule, 15× fewer network calls.
"""),
    code(r"""
samples, animation = time_model.sample(n=10, seed=0, sampler="dpmpp", steps=20)
print("samples", tuple(samples.shape), samples.dtype, "| animation", tuple(animation.shape))
show_rows([samples], row_titles=["samples"])
frames = [0, 5, 10, 15, 20]  # x_T, then x_t after steps 5, 10, 15 and the final x_0
show_rows(
    [animation[f, :5].float() / 255 for f in frames],
    row_titles=[f"frame {f}" for f in frames],
)
"""),
    md(r"""
## 4. The class-conditioned model and classifier-free guidance

The class-conditioned UNet also takes a one-hot digit $c$, through two more `FCBlock`s that
**scale** the same features the time embedding shifts:
`unflatten = c1 * unflatten + t1`, `up1 = c2 * up1 + t2`. During training each one-hot
vector is replaced by the zero vector ("no class") with probability 0.1, so the same network
also learns the unconditional $\epsilon_\theta(x_t, t, \varnothing)$.

**Classifier-free guidance** (Ho & Salimans, 2022) mixes the two predictions at every step,

$$\epsilon = \epsilon_u + \gamma\,(\epsilon_c - \epsilon_u),$$

with $\gamma = 5$ in the recipe: $\gamma = 0$ ignores the class, $\gamma = 1$ is plain
conditional sampling, $\gamma > 1$ trades variety for fidelity. This is the call users know
from the original project (plus the fast sampler):
"""),
    code(r"""
model = diffumnist.load_pretrained("class")
c = torch.arange(10)
samples, animation = model.sample(
    c, img_wh=(28, 28), guidance_scale=5.0, seed=42, sampler="dpmpp", steps=20
)
print("samples", tuple(samples.shape), "| animation", tuple(animation.shape), animation.dtype)
show_rows([samples], col_titles=[str(d) for d in c.tolist()])
"""),
    md(r"""
The animation holds $x_T$ and then $x_t$ after every step (uint8, `(F, N, 28, 28)`); a few
frames show the digits emerge from noise. `diffumnist.viz.save_gif(animation, "process.gif")`
writes the whole thing as a GIF.
"""),
    code(r"""
frames = [0, 2, 5, 8, 12, 16, len(animation) - 1]
show_rows(
    [animation[f].float() / 255 for f in frames],
    row_titles=[f"frame {f}" for f in frames],
    col_titles=[str(d) for d in c.tolist()],
)
"""),
    md(r"""
### Guidance scale, same seed

Same initial noise (seed 42) and same digits; only $\gamma$ changes. With $\gamma = 0$ the
requested class is ignored (the unconditional model), with $\gamma = 1$ most digits come out
right, and with $\gamma = 5$ they are bold and unambiguous.
"""),
    code(r"""
scales = [0.0, 1.0, 5.0]
rows = [model.sample(c, guidance_scale=g, seed=42, sampler="dpmpp", steps=20)[0] for g in scales]
show_rows(rows, row_titles=[f"γ = {g:g}" for g in scales], col_titles=[str(d) for d in c.tolist()])
"""),
    md(r"""
## 5. Measuring

The package ships a small MNIST classifier, *the judge* (test accuracy 0.995), and scores
samples in its 128-d feature space:

- **MNIST-FID**: Fréchet distance between Gaussian fits of the sample features and the
  10,000 test-digit features, printed beside its *floor* — the same distance for as many
  real training digits (FID is biased upward for small sets, so compare with the floor);
- **precision / recall** (Kynkäänniemi et al., 2019): fidelity and coverage;
- **class balance** and, for the class model, **guided accuracy**: how often the judge
  reads the digit that was asked for.

200 samples keep this quick; `MODEL_CARD.md` reports 10,000 samples with the recipe's
300-step sampler (`diffumnist eval class --n 10000`).
"""),
    code(r"""
config = SamplingConfig(guidance_scale=5.0, sampler="dpmpp", steps=20, precision="bf16")
images, labels = generate(model, 200, config, progress=False)  # uint8 (200, 28, 28), i % 10
scores = score_samples(images, labels)
report = format_scores(scores)
print(report)
"""),
    code(r"""
print(f"notebook ran in {time.perf_counter() - START:.0f} s")
"""),
]


def build() -> nbformat.NotebookNode:
    """The walkthrough notebook, without outputs."""
    cells = [nbformat.from_dict(cell) for cell in CELLS]  # fresh copies
    for index, cell in enumerate(cells):
        cell["id"] = f"cell-{index:02d}"  # stable ids keep the file diff-friendly
    return new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    )


def main() -> None:
    nbformat.write(build(), NOTEBOOK)
    print(f"wrote {NOTEBOOK}", file=sys.stderr)


if __name__ == "__main__":
    main()
