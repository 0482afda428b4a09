#!/usr/bin/env python3
"""MineWatch command line: a thin click layer over the same functions the web app calls.

Every command takes ``--data-dir`` (or MINEWATCH_DATA_DIR) and reports a user mistake as a
one-line error with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter quiet

import click  # noqa: E402
from tqdm import tqdm  # noqa: E402

from db.store import Store, StoreError  # noqa: E402
from imagery.bands import BandMismatchError, parse_band_list  # noqa: E402
from imagery.earthengine import EarthEngineError  # noqa: E402
from imagery.scene import SceneError  # noqa: E402
from imagery.vectors import VectorError  # noqa: E402
from pipeline.settings import Settings, load_settings  # noqa: E402
from review.queues import default_queue_sentence  # noqa: E402
from simulation.synthetic import MIN_INSTALLATION_KM  # noqa: E402

#: Errors that are the user's input, not a bug: shown as one line.
USER_ERRORS: tuple[type[BaseException], ...] = (
    SceneError, VectorError, BandMismatchError, StoreError, ValueError, FileNotFoundError,
    EarthEngineError,
)


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the user's mistakes into ``Error: <one line>`` and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            raise click.ClickException(str(error).splitlines()[0] if str(error) else
                                       type(error).__name__) from error

    return wrapper


#: How a bar with a total of km² is drawn (whole km², the rate in km²/s).
KM2_FORMAT = "{desc}: {n:,.0f}/{total:,.0f} km² [{elapsed}<{remaining}, {rate_fmt}]"


@contextmanager
def km2_bar(description: str, total: float | None = None) -> Iterator[Callable[[float], None]]:
    """A tqdm bar counting km² and the rate in km²/s, shown from the first update on."""
    bar: tqdm | None = None
    fmt = KM2_FORMAT if total else None

    def update(km2: float) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=description, unit="km²", dynamic_ncols=True,
                       bar_format=fmt)
        bar.update(km2)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


class StageBars:
    """``simulation.demo.DemoProgress`` as one tqdm bar per stage (the epoch bar shows the losses);
    messages go through ``tqdm.write`` above the bars."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def stage(self, name: str, total: float, unit: str) -> None:
        """Close the last stage's bar and open this one's."""
        self.close()
        self.bar = tqdm(total=total, desc=name, unit=unit, dynamic_ncols=True,
                        bar_format=KM2_FORMAT if unit == "km²" else None)

    def advance(self, units: float, **figures: float) -> None:
        """Count ``units`` done; show ``figures`` (loss, val_loss) in the bar's postfix."""
        if self.bar is not None:
            if figures:
                self.bar.set_postfix({k: f"{v:.3f}" for k, v in figures.items()}, refresh=False)
            self.bar.update(units)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the database, models, thumbnails and demo "
                   "(default: MINEWATCH_DATA_DIR or ./instance).")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None) -> None:
    """MineWatch: find surface mines in Sentinel-2 imagery and review them into an inventory.

    Typical flow: `demo` (or `ingest` your scenes, then `train --mines FILE --year YEAR`),
    `score`, `serve` to review, `cycle` to retrain on the reviews and re-predict.
    """
    try:
        ctx.obj = load_settings({"DATA_DIR": str(data_dir)} if data_dir else None)
    except ValueError as error:  # a MINEWATCH_* variable that is not a valid value
        raise click.ClickException(str(error)) from None


def open_store(settings: Settings) -> Store:
    return Store(settings.database_path)


#: --repair's help, the same for every command that reads polygons.
REPAIR_HELP = ("Mend invalid polygons (keeping their polygonal parts) instead of refusing them; a "
               "polygon that mends to a line or nothing is still refused.")

layer_option = click.option(
    "--layer", default=None,
    help="Layer to read from a file with several (GeoPackage, KML, zipped shapefiles); a file "
         "with more than one is refused without it, listing them.")


@cli.command()
@click.option("--if-empty", is_flag=True, help="Do nothing when the database already has scenes.")
@click.option("--size-km", type=click.IntRange(MIN_INSTALLATION_KM, 200), default=40,
              show_default=True, help="Side of the square territory.")
@click.option("--seed", type=int, default=2021, show_default=True, help="Random seed.")
@click.pass_obj
@user_errors
def demo(settings: Settings, if_empty: bool, size_km: int, seed: int) -> None:
    """Build the SYNTHETIC demo territory (4 yearly 12-band scenes, 2018-2021), train a first
    model from its mine polygons and score every year."""
    from simulation.demo import build_demo_installation

    with open_store(settings) as store:
        if if_empty and store.scenes.scenes():
            click.echo(f"{settings.database_path} already holds scenes; skipping the demo build.")
            return
        bars = StageBars()
        try:
            made = build_demo_installation(store, settings, size_km=size_km, seed=seed,
                                           echo=tqdm.write, progress=bars)
        finally:
            bars.close()
    for year in made.scores:
        click.echo(f"{year.year}: {year.scored} cells scored, {year.not_scored} not scored (less "
                   f"than half valid), {year.predicted_mines} predicted mines")
    click.echo(f"Demo ready in {settings.data_dir}. Start the app with `python run.py serve`.")


@cli.command()
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(path_type=Path, dir_okay=True))
@click.option("--year", type=int, required=True, help="Year of the composite.")
@click.option("--bands", default=None,
              help="Band names in file order, e.g. B2,B3,B4 (default: band descriptions or "
                   "file names). Only for files that otherwise look like Sentinel-2: the names "
                   "must form a Sentinel-2 band set (3 B2,B3,B4; 4 B2,B3,B4,B8; 12; 13 L1C).")
@click.option("--offset", type=float, default=None, metavar="DN",
              help="DN offset added to every pixel, e.g. -1000 for ESA products of processing "
                   "baseline 04.00 or later (since January 2022) whose metadata was lost; "
                   "not for Earth Engine's HARMONIZED collections (already removed). Default: "
                   "what the file's metadata declares, else 0.")
@click.option("--expect-dtype", type=click.Choice(["uint16"]), default=None,
              help="Refuse float files (the scene is declared as uint16 DN).")
@click.option("--stack", is_flag=True,
              help="PATHS are the single-band files of ONE scene (e.g. B02.tif B03.tif ...).")
@click.pass_obj
@user_errors
def ingest(settings: Settings, paths: tuple[Path, ...], year: int, bands: str | None,
           offset: float | None, expect_dtype: str | None, stack: bool) -> None:
    """Warp the files of YEAR once onto the grid into the year's mosaic (DATA_DIR/imagery/YEAR).

    Each PATH is one scene: a multi-band GeoTIFF / COG, or a folder of single-band files at
    native 10/20/60 m (use --stack to list such files instead). Files in any CRS, adjacent or
    overlapping, join one mosaic; where they overlap, pixels already stored are kept. Running it
    again with more files adds them (only the blocks they touch are rebuilt); rerunning a call
    that was interrupted resumes it. A file that cannot be a Sentinel-2 composite is refused with
    one line naming the problem, before it is read whole; nothing is stored unless every file
    reads whole."""
    from analysis.territory import refresh_territory_cells
    from pipeline.ingest import ingest_files

    band_list = parse_band_list(bands) if bands else None
    sources: list[Path | list[Path]] = [list(paths)] if stack else list(paths)
    with open_store(settings) as store, km2_bar(f"Ingesting {year}") as on_block:
        result = ingest_files(store, settings, sources, year, bands=band_list, offset=offset,
                              expect_dtype=expect_dtype, progress=on_block)
    record = result.scene
    cells = (record["row1"] - record["row0"]) * (record["col1"] - record["col0"])
    for note in result.notes:
        click.echo(f"Note: {note}")
    click.echo(f"{year}: {result.files} file(s) warped into {result.blocks} block(s), "
               f"{result.new_cells} cells with data; mosaic bands {','.join(record['bands'])}, "
               f"{cells} cells in its bounding range")
    with open_store(settings) as store:
        if refresh_territory_cells(store, settings.grid):
            click.echo("New cells classified as inside or outside the loaded territory.")


@cli.command("ee-export")
@click.option("--region", "region_file", type=click.Path(path_type=Path), required=True,
              help="Polygon file of the region (GeoJSON, GeoPackage, shapefile; features merged).")
@click.option("--year", "years", type=int, multiple=True, required=True,
              help="Year of the composite (repeatable).")
@click.option("--level", type=click.Choice(["l1c", "l2a"]), default="l1c", show_default=True,
              help="Top-of-atmosphere (L1C) or surface reflectance (L2A).")
@click.option("--max-cloud", type=float, default=20.0, show_default=True,
              help="Keep scenes with less than this percentage of cloudy pixels.")
@click.option("--prefix", default="minewatch", show_default=True, help="Export file name prefix.")
@click.option("--folder", default="minewatch", show_default=True, help="Google Drive folder.")
@click.option("--project", default=None, help="Google Cloud project registered for Earth Engine.")
@layer_option
@user_errors
def ee_export(region_file: Path, years: tuple[int, ...], level: str, max_cloud: float,
              prefix: str, folder: str, project: str | None, layer: str | None) -> None:
    """Start Earth Engine exports of yearly 12-band median composites (scenes with less than
    --max-cloud % cloud), as the seed study made them. Needs an Earth Engine account and a
    network; ingest the downloaded GeoTIFFs with `ingest FILE... --year YEAR`."""
    import shapely

    from imagery.earthengine import requests_for_years, start_export
    from imagery.vectors import read_polygons

    region = shapely.union_all(read_polygons(region_file, to_crs="EPSG:4326", layer=layer).geometries)
    for request in requests_for_years(region, years, prefix=prefix, level=level,
                                      max_cloud_percent=max_cloud):
        task = start_export(request, folder=folder, project=project)
        click.echo(f"{request.name}: export task {task} started ({request.collection}, "
                   f"< {request.max_cloud_percent:g} % cloud, {request.crs}, Drive folder {folder})")


@cli.command()
@click.option("--mines", type=click.Path(path_type=Path), default=None,
              help="Mine polygons (GeoJSON, GeoPackage, shapefile) to seed labels from.")
@click.option("--year", "years", type=int, multiple=True,
              help="Year(s) whose labels to train on (repeatable; default: all).")
@click.option("--bands", default=None, help="Bands to train on (default: the scenes' shared bands).")
@click.option("--epochs", type=click.IntRange(1, 1000), default=None,
              help="Most epochs (default: the TRAIN_EPOCHS setting).")
@click.option("--repair", is_flag=True, help=REPAIR_HELP)
@layer_option
@click.option("--activate/--no-activate", default=True, show_default=True,
              help="Make the new model the active one.")
@click.pass_obj
@user_errors
def train(settings: Settings, mines: Path | None, years: tuple[int, ...], bands: str | None,
          epochs: int | None, repair: bool, layer: str | None, activate: bool) -> None:
    """Train a new model version. With --mines, the year's seed labels come from the polygons:
    cells touching a polygon are mines, as many random far-away cells are background; the
    polygons rasterised over those cells become the year's mask layer, which supervises the
    FCN's map per 40 m block when DENSE_LOSS_WEIGHT > 0 (FCN_DEPTH auto then builds 4). They
    replace the year's seed labels and mask layer only once the model has trained: a failure
    changes nothing."""
    from pipeline.seeds import plan_seed_labels, train_on_polygons
    from pipeline.training import train_config, train_model

    if mines is not None and len(years) != 1:
        raise click.UsageError("--mines needs exactly one --year")
    with open_store(settings) as store:
        plan = (plan_seed_labels(store, settings.grid, mines, years[0], repair=repair, layer=layer)
                if mines is not None else None)
        config = train_config(settings, **({"epochs": epochs} if epochs else {}))
        bar = tqdm(total=config.epochs, desc="Training", unit="epoch", delay=0.5)
        options = {"bands": parse_band_list(bands) if bands else None, "activate": activate,
                   "config": config, "progress": lambda epoch, total, logs: bar.update(epoch - bar.n)}
        with bar:
            record, result = (train_on_polygons(store, settings, plan, **options) if plan is not None else
                              train_model(store, settings, years=list(years) or None, **options))
    if plan is not None:
        seeded = plan.summary
        click.echo(f"Seed labels {seeded.year} from {seeded.source}: {seeded.mines} mine, "
                   f"{seeded.background} background cells")
    m = result.metrics
    click.echo(f"{record['version']}{' (active)' if activate else ''}: threshold "
               f"{record['threshold']:.3f}, validation precision {m.get('precision', 0):.3f}, "
               f"recall {m.get('recall', 0):.3f}, AP {m.get('average_precision') or 0:.3f}")


@contextmanager
def scoring_runners(scheduler: str, retries: int, batch: int
                    ) -> Iterator[Callable[[str], Any] | None]:
    """None (score in this process), or a factory of Dask runners on ``scheduler`` whose workers
    stack ``batch`` FCN passes per call: model file path -> runner."""
    if not scheduler:
        yield None
        return
    from pipeline.distributed import dask_client, dask_runner

    with dask_client(scheduler) as client:
        yield functools.partial(dask_runner, client, retries=retries, batch=batch)


@cli.command()
@click.option("--year", "years", type=int, multiple=True,
              help="Year(s) to score (repeatable; default: every year with scenes).")
@click.option("--model", "version", default=None, help="Model version (default: the active one).")
@click.option("--scheduler", default=None,
              help="Dask scheduler to send blocks to: tcp://HOST:PORT, or local:N to start N local "
                   "worker processes (default: the SCHEDULER setting; empty scores here).")
@click.option("--retries", type=click.IntRange(0, 100), default=2, show_default=True,
              help="With --scheduler: times a failed block task is retried.")
@click.option("--restart", is_flag=True,
              help="Score every block again instead of resuming after the last finished one.")
@click.option("--readers", type=click.IntRange(1, 64), default=None,
              help="Reader threads (default: the SCORE_READERS setting).")
@click.option("--prefetch", type=click.IntRange(1, 64), default=None,
              help="Blocks read ahead of the FCN (default: the SCORE_PREFETCH setting).")
@click.option("--batch", type=click.IntRange(1, 256), default=None,
              help="FCN passes per FCN call, more for a GPU (default: the SCORE_BATCH setting).")
@click.pass_obj
@user_errors
def score(settings: Settings, years: tuple[int, ...], version: str | None, scheduler: str | None,
          retries: int, restart: bool, readers: int | None, prefetch: int | None,
          batch: int | None) -> None:
    """Score every cell of the years' imagery and store one score per (cell, year, model).

    The same pass stores each scored cell's embedding (one byte per filter of the last
    convolution, 64 by default) for "more like this" in the review app. Blocks are stored as
    they finish; an interrupted run resumes where it stopped."""
    from pipeline.scoring import score_year, scoring_options, year_area_km2
    from pipeline.training import load_model, model_file

    options = scoring_options(settings, readers=readers, prefetch=prefetch, batch=batch)
    with open_store(settings) as store:
        bundle = load_model(store, version, settings=settings)
        years = years or tuple(store.scenes.years())
        if not years:
            raise click.ClickException("no scenes yet: run `run.py ingest` or `run.py demo` first")
        with scoring_runners(scheduler or settings.SCHEDULER, retries, options.batch) as runner_for:
            model_path = model_file(store, store.models.model(bundle.version), settings).resolve()
            runner = runner_for(str(model_path)) if runner_for else None
            for year in years:
                with km2_bar(f"Scoring {year}", year_area_km2(store, settings, [year])) as on_km2:
                    done = score_year(store, settings, bundle, year, progress=on_km2,
                                      runner=runner, options=options, restart=restart)
                resumed = done.blocks_total - done.blocks_scored
                click.echo(f"{year}: {done.scored} cells scored by {done.model_version}, "
                           f"{done.not_scored} not scored (less than "
                           f"{settings.MIN_VALID_FRACTION:.0%} valid pixels), "
                           f"{done.predicted_mines} predicted mines"
                           + (f" ({resumed} of {done.blocks_total} blocks were already done)"
                              if resumed else ""))
                for warning in done.warnings:
                    click.echo(f"Warning: {warning}", err=True)


@cli.command()
@click.option("--cycle-id", type=int, default=None,
              help="Run a cycle already recorded by the web app (internal).")
@click.pass_obj
@user_errors
def cycle(settings: Settings, cycle_id: int | None) -> None:
    """Retrain on the seed and every reviewed label (every rejected prediction of any model as a
    hard negative), validate on the reviews of the fixed validation blocks, re-score all years,
    and activate the new model only if everything succeeded and its AP on those cells is not
    worse than the active model's by more than ACTIVATION_MARGIN. First cleans up after a cycle
    that died (its unfinished model, scores and files)."""
    from pipeline.cycle import run_cycle

    with open_store(settings) as store:
        with tqdm(total=100, desc="Cycle", unit="%") as bar:
            def echo(message: str, progress: float) -> None:
                bar.set_description(message[:60])
                bar.update(round(progress * 100) - bar.n)

            with scoring_runners(settings.SCHEDULER, 2, settings.SCORE_BATCH) as runner_for:
                row = run_cycle(store, settings, cycle_id=cycle_id, echo=echo,
                                runner_for=runner_for)
    if row["status"] != "succeeded":
        raise click.ClickException(f"cycle {row['id']} failed: {row['message']}")
    click.echo(f"Cycle {row['id']}: {row['message']}; predicted mines per year "
               f"{row['predicted_mines']}")


@cli.command()
@click.option("--job-id", type=int, required=True,
              help="Run an export or report job already recorded by the web app (internal).")
@click.pass_obj
@user_errors
def job(settings: Settings, job_id: int) -> None:
    """Run a recorded export or report job (the web app's background worker)."""
    from analysis.jobs import run_job

    with open_store(settings) as store:
        row = run_job(store, settings, job_id)
    if row["status"] != "succeeded":
        raise click.ClickException(f"job {job_id} failed: {row['message']}")
    click.echo(f"Job {job_id}: {row['output']} ({row['message']})")


@cli.command(help=f"Serve the review app (waitress). {default_queue_sentence()}")
@click.option("--host", default=None, help="Address to listen on (default: the HOST setting, "
                                           "127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: the PORT setting, 5000).")
@click.pass_obj
@user_errors
def serve(settings: Settings, host: str | None, port: int | None) -> None:
    from dataclasses import replace

    from labeller import serve as serve_app

    settings = replace(settings, **{k: v for k, v in (("HOST", host), ("PORT", port)) if v})
    serve_app(settings)


@cli.group()
def users() -> None:
    """Accounts of the review app: add, list, disable, reset-password."""


def _read_password(from_stdin: bool) -> str:
    """A new password: one line of standard input, or asked twice at a hidden prompt."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["reviewer", "lead", "admin"]), required=True,
              help="reviewer: review; lead: also cycles, exports, team figures; admin: also "
                   "accounts.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input "
                                                     "(one line) instead of a prompt.")
@click.pass_obj
@user_errors
def users_add(settings: Settings, name: str, role: str, password_stdin: bool) -> None:
    """Create an account NAME (names are never renamed or reused)."""
    from review.accounts import FIRST_ADMIN_HINT, check_name, create_account, has_admin

    check_name(name)
    password = _read_password(password_stdin)
    with open_store(settings) as store:
        account = create_account(store, name, role, password)
        admin = has_admin(store)
    click.echo(f"Account {account['name']} ({account['role']}) created.")
    if not admin:
        click.echo(FIRST_ADMIN_HINT)


@users.command("list")
@click.pass_obj
@user_errors
def users_list(settings: Settings) -> None:
    """Every account: name, role, state, created."""
    from review.accounts import list_accounts

    with open_store(settings) as store:
        rows = list_accounts(store)
    if not rows:
        click.echo("No accounts: the app runs in open mode while it listens only on loopback.")
    for row in rows:
        state = "disabled" if row["disabled"] else "active"
        click.echo(f"{row['name']:<40} {row['role']:<8} {state:<8} {row['created_at']}")


@users.command("disable")
@click.argument("name")
@click.option("--enable", is_flag=True, help="Enable the account again instead.")
@click.pass_obj
@user_errors
def users_disable(settings: Settings, name: str, enable: bool) -> None:
    """Disable account NAME: its sessions end and its leases are released."""
    from review.accounts import disable_account

    with open_store(settings) as store:
        disable_account(store, name, disabled=not enable)
    click.echo(f"Account {name} {'enabled' if enable else 'disabled'}.")


@users.command("reset-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input "
                                                     "(one line) instead of a prompt.")
@click.pass_obj
@user_errors
def users_reset_password(settings: Settings, name: str, password_stdin: bool) -> None:
    """Set a new password for account NAME; its open sessions end."""
    from review.accounts import reset_password

    with open_store(settings) as store:
        if store.accounts.account(name) is None:
            raise click.ClickException(f"no account named {name!r}")
        password = _read_password(password_stdin)
        reset_password(store, name, password)
    click.echo(f"New password set for {name}.")


@cli.group()
def labels() -> None:
    """Labels users bring: import a QGIS layer of mine / background points or polygons."""


@labels.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--year", type=int, required=True, help="Year the labels are of.")
@click.option("--label-field", required=True,
              help="Attribute whose values say mine or background (e.g. status, label).")
@click.option("--map", "pairs", multiple=True, metavar="VALUE=mine|background|ignore",
              help="What a value means (repeatable, case-insensitive), over the defaults: "
                   "mine/1/true/yes, background/0/false/no/rejected; empty or skip: left out.")
@layer_option
@click.pass_obj
@user_errors
def labels_import(settings: Settings, file: Path, year: int, label_field: str,
                  pairs: tuple[str, ...], layer: str | None) -> None:
    """Import the labels of FILE (GeoPackage, GeoJSON, shapefile, KML, zip, CSV with lon/lat; any
    CRS): a point labels the cell it falls in, a polygon the cells whose centre it covers. All or
    nothing: any unknown value, feature outside the ingested cells or conflict stores nothing;
    importing the same file again stores nothing twice."""
    from review.imports import import_labels, parse_mapping

    mapping = parse_mapping(pairs)
    with open_store(settings) as store:
        done = import_labels(store, settings.grid, file, year=year, label_field=label_field,
                             mapping=mapping, layer=layer)
    click.echo(f"{file.name}: {done.features:,} features, {done.ignored:,} left out; "
               f"{done.year}: {done.mines:,} mine, {done.background:,} background cells; "
               f"{done.stored:,} labels stored"
               + ("" if done.stored else " (imported before: nothing new)"))


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--where", default=None,
              help="Keep only features whose attribute matches, e.g. iso3=ZAF,LSO or "
                   "name='South Africa' (default: every feature).")
@click.option("--name", default=None, help="Name of the territory (default: the features' names).")
@click.option("--repair", is_flag=True, help=REPAIR_HELP)
@layer_option
@click.pass_obj
@user_errors
def territory(settings: Settings, file: Path, where: str | None, name: str | None,
              repair: bool, layer: str | None) -> None:
    """Load the territory polygon FILE (GeoJSON, GeoPackage, shapefile, KML, zip; any CRS). Cells
    whose centre lies outside are dropped from review queues, reports, maps and exports. A
    territory with no ingested cell inside is refused (the error says where each lies)."""
    from analysis.territory import load_territory

    with open_store(settings) as store:
        done = load_territory(store, settings.grid, file, where=where, name=name, repair=repair,
                              layer=layer)
    click.echo(f"Territory {done.name}: {done.n_features} features, {done.area_km2:,.0f} km²; "
               f"{done.cells_inside:,} cells inside, {done.cells_outside:,} outside (dropped)")


@cli.command("protected-areas")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name-field", default=None, help="Attribute holding the names (default: NAME, "
                                                  "name, ...).")
@click.option("--designation-field", default=None,
              help="Attribute holding the designation (default: DESIG_ENG, designation, ...).")
@click.option("--repair", is_flag=True, help=REPAIR_HELP)
@layer_option
@click.pass_obj
@user_errors
def protected_areas(settings: Settings, file: Path, name_field: str | None,
                    designation_field: str | None, repair: bool, layer: str | None) -> None:
    """Load protected-area polygons from FILE (replacing those loaded before, all at once: a
    bad file changes nothing)."""
    from analysis.protected import load_protected_areas

    with open_store(settings) as store:
        done = load_protected_areas(store, settings.grid, file, name_field=name_field,
                                    designation_field=designation_field, repair=repair,
                                    layer=layer)
    click.echo(f"{done.count} protected areas loaded ({done.area_km2:,.0f} km²)")
    for note in done.notes:
        click.echo(f"Note: {note}")


@cli.command()
@click.option("--year", type=int, default=None, help="Year (default: the latest scored).")
@click.option("--model", "version", default=None, help="Model version (default: the active one).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv"]), default="markdown",
              show_default=True)
@click.option("--k", type=int, default=2, show_default=True,
              help="Persistence rule: a mine must be seen in K of N consecutive years.")
@click.option("--n", type=int, default=2, show_default=True, help="See --k.")
@click.pass_obj
@user_errors
def report(settings: Settings, year: int | None, version: str | None, fmt: str, k: int,
           n: int) -> None:
    """Print the territory report (the seed's Table 1, per year, trend over cycles, protected
    areas, change over the years, restoration candidates)."""
    from analysis.change import PersistenceRule
    from analysis.report import build_report, to_csv, to_markdown

    with open_store(settings) as store:
        made = build_report(store, settings, year=year, model_version=version,
                            rule=PersistenceRule(k, n))
    click.echo((to_markdown if fmt == "markdown" else to_csv)(made), nl=False)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["gpkg", "geojson", "csv"]), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="File to write.")
@click.option("--year", type=int, default=None, help="Year (default: every scored year).")
@click.option("--model", "version", default=None, help="Model version (default: the active one).")
@click.option("--layer", type=click.Choice(["cells", "mine_points"]), default="cells",
              show_default=True, help="What a GeoJSON or CSV export holds (a GeoPackage has all).")
@click.pass_obj
@user_errors
def export(settings: Settings, fmt: str, out: Path, year: int | None, version: str | None,
           layer: str) -> None:
    """Export cells, mine points, mining area, protected-area hits and change classes for QGIS.
    The file is written aside and moved into place only when complete."""
    from analysis.export import export as write_export

    with open_store(settings) as store:
        done = write_export(store, settings, fmt, out, year=year, model_version=version,
                            layer=layer)
    layers = ", ".join(f"{name} {count:,}" for name, count in done.layers.items())
    click.echo(f"{done.path}: {done.model_version}, {', '.join(map(str, done.years))}; {layers}")


if __name__ == "__main__":
    sys.exit(cli())
