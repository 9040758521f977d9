"""What a person sees: the engine's events rendered, and a study's report.

- ``progress``: the live table in a terminal (rich);
- ``notebook``: the same in Jupyter, one display updated in place;
- ``report``, ``report_population``: the Plotly report of a study (and a population's lineage).

Views read the study (``sweeper.study``) and render ``sweeper.engine.events``; they start no trial.
"""
