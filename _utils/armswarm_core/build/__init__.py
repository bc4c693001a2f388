"""Distributed image builds.

``dockerfile`` (parsing, parent pins), ``build_dag`` (the image tree as a DAG), ``scheduler``
(list scheduling), ``dispatch`` (jobs to nodes, retries, probes), ``build_job`` (one build on
one node), ``build_contexts`` (build contexts served to the nodes by hash), ``build_report``
(the run's table and timeline), ``build_settings`` (``armswarm:imagebuild``) and ``build_run``
(a whole run, its plan and registry retention, behind the runner's transport).
"""
