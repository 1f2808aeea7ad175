"""The explorer: a local web page for looking at a trained generator (`--mode explore`).

Lives here: `Explorer`, what the page does as plain methods on NumPy arrays (a seeded slice, style
mixing, a slice projected with its anomaly map, saving what is shown), and `build_page` / `serve`,
the Gradio page over them. Not here: making images (sampling.py), projecting (projection.py),
opening the model (inference.py), flags (driver.py). The page has no generation code of its own,
so what it shows is what `--mode generate` and `--mode project` write.
"""

import contextlib
import dataclasses
import io
import ipaddress
import os
import signal
import socket
import time

import numpy as np
from absl import logging
from PIL import Image

import labels
import pixels
import projection
import sampling
import visualize

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")    # no analytics, no version check over the network
NOISE_MODES = ("const", "random", "none")
DEFAULT_PORT = 7860
RANDOM_NOISE_NOT_KEPT = "random noise is not kept: the saved latent renders with the fixed noise"
DISPLAY_SIZE = 256               # pixels a side on the page; a 64x64 slice is shown enlarged


@dataclasses.dataclass
class Shown:
    """The last image the page made, for `Explorer.save`."""
    name: str
    image: np.ndarray             # [R, R, C] in [-1, 1]
    ws: np.ndarray                # [1, num_ws, w_dim]
    noises: list | None           # one [1, h, w, 1] map per noise layer; None: the generator's fixed maps


class Explorer:
    """A trained generator (`inference.Trained`) and what the page asks of it. `settings` and
    `distance` are the projection's (projection.ProjectionSettings, projection.make_distance);
    `encoder` (encoder.py), when given, starts each projection as `--mode project` does."""

    def __init__(self, trained, settings=None, distance=None, out_dir="explored", encoder=None):
        self.g, self.spec, self.source, self.encoder = trained.generator, trained.spec, trained.source, encoder
        self.settings = settings or projection.ProjectionSettings()
        self.distance = distance or projection.make_distance(self.settings.distance)
        self.out_dir = out_dir
        self.projectors, self.w_stats = {}, None
        self.loaded = (None, None)            # (path and its mtime, load_targets' result): one decode per upload
        self.shown = None

    @property
    def label_columns(self):
        return self.spec.columns if self.spec is not None else ()

    def label(self, values):
        """The label vector [c_dim] for `values`, one per label column in order (None for an
        unconditional model); a value outside the training range gets the command line's message."""
        if self.spec is None:
            return None
        if len(values) != len(self.spec.columns):
            raise labels.LabelError(f"this model takes {len(self.spec.columns)} label values "
                                    f"({', '.join(self.spec.names)}), got {len(values)}")
        checked = {c.name: labels.check_value(c, v) for c, v in zip(self.spec.columns, values)}
        return labels.encode_values(self.spec, checked)

    def slice(self, seed, psi=1.0, truncation_cutoff=None, noise_mode="const", label_values=()):
        """The image of `seed` [R, R, C] in [-1, 1], as `--mode generate --seeds seed` makes it."""
        seed, c = int(seed), self.label(label_values)
        image = sampling.synthesize(self.g, [seed], psi, truncation_cutoff, noise_mode=noise_mode, c=c)[0]
        ws = sampling.styles(self.g, [seed], psi, truncation_cutoff, c)
        self.shown = Shown(f"seed{seed:04d}", image, ws, self._noise_maps(noise_mode))
        return image

    def _noise_maps(self, noise_mode):
        """The maps a saved latent renders with: the fixed ones, zeros, or (random noise is not kept)
        None, which renders with the fixed ones."""
        if noise_mode == "none":
            return [np.zeros([1, *layer.const_noise.shape[1:]], np.float32) for layer in self.g.synthesis.noises]
        return projection.const_noises(self.g.synthesis) if noise_mode == "const" else None

    def mix(self, row_seed, col_seed, first_layer, last_layer, psi=1.0, truncation_cutoff=None, noise_mode="const",
            label_values=()):
        """(row image, column image, mixed) [R, R, C] each: the mixed one is `row_seed` with the styles
        of layers first_layer..last_layer from `col_seed`, the cell of `--mode generate`'s mixing grid."""
        first, last = int(first_layer), int(last_layer)
        if first > last:
            raise ValueError(f"the mixed layers run from {first} to {last}: the first must not be after the last")
        grid = sampling.style_mixing_grid(self.g, [int(row_seed)], [int(col_seed)], range(first, last + 1), psi,
                                          noise_mode, truncation_cutoff, self.label(label_values))
        _, col_image, row_image, mixed = grid                                  # [blank, column | row, cell]
        return row_image, col_image, mixed

    def targets(self, path):
        """The slices of an uploaded file (a volume gives one per axial level): (names, uint8 [N, R, R, C]).
        Raises data.DataError with what was wrong."""
        key = (path, os.path.getmtime(path)) if os.path.isfile(path) else None
        if key is None or self.loaded[0] != key:
            self.loaded = (key, projection.load_targets(target=path, resolution=self.g.resolution,
                                                        channels=self.g.channels))
        return self.loaded[1]

    def project(self, path, index=0, num_steps=None, progress=None):
        """Slice `index` of the file at `path` projected as `--mode project` does: (target,
        reconstruction [R, R, C] in [-1, 1], anomaly map [R, R], PSNR dB, SSIM). `progress(step, total)`
        is called after every step."""
        projection.unconditional(self.g)
        names, targets = self.targets(path)
        if not 0 <= int(index) < len(targets):
            raise ValueError(f"{os.path.basename(path)} has {len(targets)} slice(s): pick one from 0 to "
                             f"{len(targets) - 1}")
        settings = dataclasses.replace(self.settings, num_steps=int(num_steps or self.settings.num_steps))
        if settings not in self.projectors:             # one per step count; w_avg and w_std mapped once
            self.w_stats = self.w_stats or projection.latent_stats(self.g, settings.w_avg_samples)
            self.projectors[settings] = projection.Projector(self.g, settings, self.distance, self.w_stats,
                                                             self.encoder)
        target = pixels.to_unit_range(targets[int(index)])
        result = self.projectors[settings].project(target[None], progress=None if progress is None else (
            lambda step, _: progress(step, settings.num_steps)))
        image = result.images[0]
        self.shown = Shown(names[int(index)], image, result.ws, result.noises)
        return (target, image, *projection.reconstruction_scores(target, image))

    def save(self):
        """The shown image as PNG and its latent as `.npz` (`--mode generate --projected_w` renders it)
        in `out_dir`. Returns both paths."""
        if self.shown is None:
            raise ValueError("nothing to save yet: make a slice first")
        os.makedirs(self.out_dir, exist_ok=True)
        stem = os.path.join(self.out_dir, self.shown.name)
        visualize.save_image(stem + ".png", self.shown.image)
        noises = self.shown.noises
        if noises is None:
            logging.warning("explore: %s", RANDOM_NOISE_NOT_KEPT)
            noises = projection.const_noises(self.g.synthesis)
        projection.save_latents(stem + ".npz", self.shown.ws, noises, [self.shown.name], "wplus")
        return stem + ".png", stem + ".npz"


def picture(image):
    """[R, R, C] in [-1, 1] -> uint8 [R, R] (or RGB) for the page."""
    levels = pixels.to_uint8(image)
    return levels[..., 0] if levels.shape[-1] == 1 else levels


def enlarged(image):
    """`picture(image)` with each pixel repeated to about DISPLAY_SIZE a side, so that a 64x64 slice
    is seen without the browser's smoothing inventing detail."""
    shown = picture(image)
    factor = max(1, DISPLAY_SIZE // shown.shape[0])
    return np.repeat(np.repeat(shown, factor, axis=0), factor, axis=1)


def heat_picture(heat, title):
    """The anomaly map with its colour bar as the CLI draws it, as RGB uint8."""
    with Image.open(io.BytesIO(projection.heat_map_png(heat, title))) as image:
        return np.asarray(image.convert("RGB"))


def build_page(explorer):
    """The Gradio page over `explorer`. Errors a user can cause are shown on the page (gr.Error)
    and the server goes on."""
    import gradio as gr

    def shown(function):
        """`function` with the explorer's user errors turned into messages on the page."""
        def call(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except (ValueError, OSError) as e:          # DataError and LabelError are ValueErrors
                raise gr.Error(str(e)) from None
        call.__name__ = function.__name__
        return call

    g = explorer.g
    last_layer = g.num_ws - 1
    with gr.Blocks(title="StyleGAN2 brain MRI explorer", analytics_enabled=False) as page:
        gr.Markdown(f"## StyleGAN2 brain MRI explorer\n`{explorer.source}`: {g.resolution}x{g.resolution}, "
                    f"{g.num_ws} style layers" + (f"; labels: {labels.describe(explorer.spec)}" if explorer.spec
                                                   else ""))
        with gr.Row():
            seed = gr.Number(value=0, precision=0, minimum=0, label="seed")
            seed_slider = gr.Slider(0, 999, value=0, step=1, label="seed (slider)")
        with gr.Row():
            psi = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="truncation psi (1: off)")
            cutoff = gr.Slider(0, g.num_ws, value=g.num_ws, step=1, label="truncation cutoff (layers truncated)")
            noise_mode = gr.Radio(list(NOISE_MODES), value="const", label="noise")
        label_inputs = []
        for column in explorer.label_columns:
            if column.kind == "categorical":
                label_inputs.append(gr.Radio(list(column.categories), value=column.categories[0], label=column.name))
            else:
                label_inputs.append(gr.Slider(column.low, column.high, value=(column.low + column.high) / 2,
                                              label=f"{column.name} ({column.low:g} to {column.high:g})"))

        with gr.Tab("Slice"):
            slice_image = gr.Image(label="generated slice", height=DISPLAY_SIZE, width=DISPLAY_SIZE, format="png")
        with gr.Tab("Style mixing"):
            with gr.Row():
                col_seed = gr.Number(value=1, precision=0, minimum=0, label="second seed (gives the mixed layers)")
                first = gr.Slider(0, last_layer, value=0, step=1, label="first layer from the second seed")
                last = gr.Slider(0, last_layer, value=min(3, last_layer), step=1, label="last layer")
            with gr.Row():
                mix_images = [gr.Image(label=name, height=DISPLAY_SIZE, width=DISPLAY_SIZE, format="png")
                              for name in ("seed", "second seed", "mixed")]
            mix_button = gr.Button("Mix")
        with gr.Tab("Project a slice"):
            with gr.Row():
                upload = gr.File(label="a slice (PNG, JPEG, TIFF, BMP) or a volume (NIfTI, Analyze)")
                level = gr.Slider(0, 1, value=0, step=1, label="slice of the volume", visible=False)
                steps = gr.Slider(1, max(1000, explorer.settings.num_steps), value=explorer.settings.num_steps,
                                  step=1, label="projection steps")
            project_button = gr.Button("Project")
            with gr.Row():
                project_images = [gr.Image(label=name, height=DISPLAY_SIZE, width=DISPLAY_SIZE, format="png")
                                  for name in ("target", "reconstruction")]
                heat_image = gr.Image(label="anomaly map", height=DISPLAY_SIZE, format="png")
            project_text = gr.Markdown()
        with gr.Row():
            save_button = gr.Button("Save the shown image and its latent")
            saved = gr.File(label="saved", file_count="multiple")

        def cut(cutoff_value):
            """The cutoff slider's value as sampling takes it: every layer (its maximum) is None."""
            return None if int(cutoff_value) >= g.num_ws else int(cutoff_value)

        def make_slice(seed_value, psi_value, cutoff_value, noise, *values):
            return enlarged(explorer.slice(seed_value, psi_value, cut(cutoff_value), noise, values))

        def make_mix(seed_value, col, first_layer, last_layer_value, psi_value, cutoff_value, noise, *values):
            return [enlarged(x) for x in explorer.mix(seed_value, col, first_layer, last_layer_value, psi_value,
                                                      cut(cutoff_value), noise, values)]

        def read_upload(file):
            if file is None:
                return gr.Slider(visible=False)
            names, _ = explorer.targets(file)
            return gr.Slider(maximum=max(1, len(names) - 1), value=len(names) // 2, visible=len(names) > 1)

        def make_projection(file, index, num_steps, progress=gr.Progress()):
            if file is None:
                raise ValueError("upload a slice first")
            target, image, heat, psnr, ssim = explorer.project(file, index, num_steps,
                                                               lambda step, total: progress((step, total)))
            name = explorer.shown.name
            return (enlarged(target), enlarged(image), heat_picture(heat, ""),
                    f"**{name}**: PSNR {psnr:.2f} dB, SSIM {ssim:.3f} over {int(num_steps)} steps")

        slice_inputs = [seed, psi, cutoff, noise_mode, *label_inputs]
        # The slice follows every move (.input is the user's, never a function's: no update loops); a
        # render that is overtaken while queued is skipped (always_last).
        gr.on([seed.change, psi.input, cutoff.input, noise_mode.change, page.load, *[x.input for x in label_inputs]],
              shown(make_slice), slice_inputs, slice_image, api_name="slice", trigger_mode="always_last")
        seed_slider.input(lambda value: value, seed_slider, seed, api_name=False, trigger_mode="always_last")
        seed.change(lambda value: min(max(int(value or 0), 0), 999), seed, seed_slider, api_name=False)
        mix_button.click(shown(make_mix), [seed, col_seed, first, last, psi, cutoff, noise_mode, *label_inputs],
                         mix_images, api_name="mix")
        upload.change(shown(read_upload), upload, level, api_name="upload")
        project_button.click(shown(make_projection), [upload, level, steps],
                             [*project_images, heat_image, project_text], api_name="project")

        def save_shown():
            if explorer.shown is not None and explorer.shown.noises is None:
                gr.Warning(RANDOM_NOISE_NOT_KEPT)
            return list(explorer.save())

        save_button.click(shown(save_shown), None, saved, api_name="save")
    return page


def is_loopback(host):
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def exposure_warning(host, port):
    """What to tell a user who serves the page beyond this machine, or None."""
    if is_loopback(host):
        return None
    return (f"explore: serving on {host}, reachable from other machines; the page has no authentication, so "
            f"anyone who can reach {host}:{port} can use the model and read what it saves")


def serve(explorer, host="127.0.0.1", port=DEFAULT_PORT, block=True):
    """Serve the page on host:port until SIGINT (Ctrl+C) or SIGTERM; block=False returns the running
    page at once (stop it with .close())."""
    warning = exposure_warning(host, port)
    if warning:
        logging.warning("%s", warning)
    page = build_page(explorer)
    page.queue(default_concurrency_limit=1)         # one model: requests take turns
    with StopSignals() if block else contextlib.nullcontext() as stop:   # caught from before the page answers
        page.launch(server_name=host, server_port=int(port), share=False, prevent_thread_lock=True,
                    inbrowser=False, quiet=True)
        logging.info("explore: the page is at http://%s:%d (Ctrl+C stops it)", host, port)
        if block:
            while not stop.received:
                time.sleep(0.2)
            page.close()
            logging.info("explore: stopped by %s", stop.received[0])
    return page


class StopSignals:
    """While entered, SIGINT and SIGTERM are recorded in `received` (their names) instead of acted on."""

    def __enter__(self):
        self.received = []
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        self.received.append(signal.Signals(signum).name)

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
