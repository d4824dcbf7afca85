"""mimmia dashboard: `streamlit run app.py`.

Opens on the bundled demo (assets/demo). Point it at another experiment with
the Overview page, or before starting with MIMMIA_EXPERIMENT=<bundle folder |
experiment.json>. Pages live in app_pages/ (not pages/: a pages/ folder would
switch streamlit to its older file-based navigation).
"""
from pathlib import Path

import streamlit as st

FAVICON = Path(__file__).parent / "app_pages" / "favicon.png"  # served locally: no request leaves the machine
st.set_page_config(page_title="mimmia: membership inference against MAE", page_icon=str(FAVICON), layout="wide")

loading = st.empty()  # the first visit imports torch and the core before anything else can be drawn
with loading.container():
    with st.spinner("Starting mimmia: loading torch and the scoring core…"):
        from app_pages import state  # noqa: E402 -- imported under the spinner on purpose
loading.empty()

ATTACK_PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("app_pages/reconstruction.py", title="Reconstruction", icon=":material/image:"),
    st.Page("app_pages/distances.py", title="Distances", icon=":material/bar_chart:"),
    st.Page("app_pages/roc.py", title="ROC and threshold", icon=":material/show_chart:"),
    st.Page("app_pages/mask_ratio.py", title="Mask ratio", icon=":material/tune:"),
    st.Page("app_pages/exposed.py", title="Most exposed images", icon=":material/warning:"),
]
OTHER_PAGES = [  # recorded results and checkpoints: the sidebar's attack settings do not apply
    st.Page("app_pages/studies.py", title="Studies", icon=":material/science:"),
    st.Page("app_pages/defenses.py", title="Defenses", icon=":material/shield:"),
    st.Page("app_pages/models.py", title="Models", icon=":material/memory:"),
]

page = st.navigation(ATTACK_PAGES + OTHER_PAGES)
state.settings_sidebar(applies=not any(page is other for other in OTHER_PAGES))
page.run()
