"""MLflow's web UI after a search, looked at as a person would, in Debian's headless Chromium: the
experiment list, the printed link's runs table, the parent run with its nested trials, a trial's
params and metric charts, and the Pareto plot. The search and its re-training are the session's
e2e and e2e_retrain (tests/conftest.py); every page is kept as a screenshot (fixture screenshots)."""
import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.slow  # views the session's smoke search and its re-training

TRIAL_NAME = re.compile(r"^t\d\d \w+ test_resnet lr=")  # tracker.run_name of the smoke search's trials


def show(page, url: str) -> None:
    """Load `url` afresh (not as a change of the hash route); close MLflow's assistant panel, which
    opens by itself on a first visit."""
    page.goto("about:blank")
    page.goto(url)
    close = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    try:
        close.click(timeout=5_000)
    except Exception:  # noqa: BLE001 - already closed (a later page of the same profile)
        pass


def experiment(e2e) -> str:
    return e2e["parents"][0].info.run_name  # the parent run is named after its experiment


def run_link(page, run):
    """The link to `run` in a runs table."""
    return page.locator(f'a[href$="/runs/{run.info.run_id}"]')


def runs_url(e2e, query: str = "workflowType=machine_learning") -> str:
    run = e2e["parents"][0]
    return f"{e2e['client'].tracking_uri}/#/experiments/{run.info.experiment_id}/runs?{query}"


def test_the_experiment_list_tells_the_search_and_its_retraining_apart(e2e, e2e_retrain, browser_page, screenshots):
    page = browser_page
    show(page, f"{e2e['client'].tracking_uri}/#/experiments?workflowType=machine_learning")
    search = page.get_by_role("row").filter(has=page.get_by_role("link", name=experiment(e2e), exact=True))
    expect(search).to_contain_text(re.compile(r"Search of multitask over \S*spaces/multitask\.py"))
    retrain = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"{experiment(e2e)}-retrain", exact=True))
    expect(retrain).to_contain_text("Re-training of multitask")
    page.screenshot(path=screenshots / "experiments.png")


def test_the_printed_link_opens_the_runs_best_first_with_the_objectives_as_columns(e2e, browser_page, screenshots):
    page = browser_page
    (link,) = re.findall(r"MLflow: (\S+)", e2e["out"])
    show(page, link)
    expect(page.get_by_text("Model training", exact=True)).to_be_visible()
    expect(page.get_by_text("Sort: val/f1_macro")).to_be_visible()
    for column in ("val/f1_macro", "perf/train_images_per_s", "trials/finished", "trials/stopped"):
        expect(page.locator(f'[role="columnheader"][col-id="metrics.`{column}`"]')).to_be_attached()
    names = page.get_by_role("link", name=TRIAL_NAME)
    expect(names).to_have_count(len(e2e["trials"]))
    expect(run_link(page, e2e["parents"][0])).to_be_visible()  # the parent, with the best values
    page.screenshot(path=screenshots / "runs-best-first.png")


def test_the_parent_run_unfolds_into_its_trials(e2e, browser_page, screenshots):
    page = browser_page
    show(page, runs_url(e2e))  # MLflow nests runs under their parent when sorted by creation
    parent = page.get_by_role("row").filter(has=run_link(page, e2e["parents"][0]))
    expect(page.get_by_role("link", name=TRIAL_NAME)).to_have_count(0)
    parent.locator('[data-component-id$="runnamecellrenderer.tsx_46"]').click()  # the row's unfold button
    expect(page.get_by_role("link", name=TRIAL_NAME)).to_have_count(len(e2e["trials"]))
    page.screenshot(path=screenshots / "parent-unfolded.png")


def test_a_trial_shows_its_params_and_metric_charts(e2e, browser_page, screenshots):
    page = browser_page
    trial = next(r for r in e2e["trials"] if r.info.status == "FINISHED")
    url = f"{e2e['client'].tracking_uri}/#/experiments/{trial.info.experiment_id}/runs/{trial.info.run_id}"
    show(page, f"{url}?workflowType=machine_learning")
    expect(page.get_by_role("heading", name=trial.info.run_name)).to_be_visible()
    row = page.get_by_role("row").filter(has_text="model/arch")
    expect(row).to_contain_text(trial.data.params["model/arch"])
    page.screenshot(path=screenshots / "trial-overview.png")
    show(page, f"{url}/model-metrics?workflowType=machine_learning")
    page.get_by_placeholder("Search metric charts").fill("f1_macro")
    expect(page.get_by_text(f"{trial.info.run_name} (val/f1_macro)")).to_be_visible()  # the chart's legend
    expect(page.locator(".js-plotly-plot .scatterlayer .trace").first).to_be_visible()  # its line, drawn
    page.screenshot(path=screenshots / "trial-charts.png")


def test_the_pareto_plot_renders_on_the_parent_run(e2e, browser_page, screenshots):
    page = browser_page
    parent = e2e["parents"][0]
    url = runs_url(e2e).replace("/runs?", f"/runs/{parent.info.run_id}/artifacts/pareto.html?")
    show(page, url)
    plot = page.frame_locator("iframe").first.locator(".js-plotly-plot")
    expect(plot).to_be_visible()
    expect(plot.locator(".scatterlayer .point").first).to_be_visible()
    page.screenshot(path=screenshots / "pareto.png")
