"""What a page shows while scores it needs are missing: the cost before anything runs, then one progress
bar for the whole job (total, ETA, Stop), refreshed by a fragment; the page reruns as each stage is done,
so its first results appear before the rest."""
import hashlib

import streamlit as st

from app_pages.cached import Pending


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def _widget_key(pending: Pending, name: str) -> str:
    return f"job_{name}_{hashlib.sha256(repr(pending.key).encode()).hexdigest()[:12]}"


def show(pending: Pending, what: str) -> None:
    """The offer to score, or the running job's progress. what: what the scores are for, e.g. 'this page'."""
    job = pending.job()
    progress = None if job is None else job.progress()
    if progress is not None and progress.running:
        _running(pending, progress.stages_done)
        return
    stages = "; ".join(f"{label}: {m.image_masks:,}" for label, m in pending.stages)
    if progress is not None and progress.error:
        st.error(f"Scoring stopped with an error: {progress.error}")
    elif progress is not None and progress.cancelled:
        st.warning(f"Scoring was stopped after {progress.done:,} of {progress.total:,} image-masks; the scores "
                   "of every finished pass are kept.")
    with st.container(border=True):
        st.markdown(f"**Scoring needed for {what}**: {pending.image_masks:,} image-masks not cached yet "
                    f"({stages}), about **{_seconds(pending.seconds)}** on this machine.")
        st.caption("Nothing is scored until you start. Results appear as each part is done, and every finished "
                   "pass is cached on disk, so these settings are scored once.")
        if st.button("Start scoring", key=_widget_key(pending, "start"), type="primary"):
            pending.start()
            st.rerun()


@st.fragment(run_every=1.0)
def _running(pending: Pending, stages_seen: int) -> None:
    p = pending.job().progress()
    if not p.running or p.stages_done != stages_seen:
        st.rerun()  # the whole page: new results are ready
    eta = "" if p.eta_s is None else f", about {_seconds(p.eta_s)} left"
    st.progress(min(p.done / max(p.total, 1), 1.0), text=f"Scoring {p.done:,} / {p.total:,} image-masks{eta}")
    if st.button("Stop", key=_widget_key(pending, "stop")):
        pending.job().cancel()
        st.rerun()


__all__ = ["show"]
