"""Studies: the paper's questions (what makes an MAE leak) as grids of points, run with one command.

    spec      StudySpec, the point layout (BASE_POINT) and dotted settings
    builtin   the built-in studies on Fashion-MNIST, load_study_spec
    split     which images a point's models train and are attacked on
    models    the training (and decoder-fit) jobs, shared across points, resumable, parallel
    runner    run_study: train, score, attack, write as it goes
    results   per-point metrics, study.json / study.csv, the finding in words, reading results back
    tradeoff  a defenses study's privacy against utility, its Pareto front, a sentence for a teacher
"""
from .builtin import BUILTIN_STUDIES, load_study_spec
from .results import curve, curve_rows, finding, headline, list_studies, load_study, point_scores
from .runner import run_study
from .spec import BASE_POINT, StudySpec
from .tradeoff import tradeoff_rows, tradeoff_sentence

__all__ = ["BUILTIN_STUDIES", "BASE_POINT", "StudySpec", "load_study_spec", "run_study", "load_study", "list_studies", "curve", "curve_rows",
           "finding", "headline", "point_scores", "tradeoff_rows", "tradeoff_sentence"]
