"""Salt outputter for ``imagebuild.run`` and ``imagebuild.plan``: a table a person can read.

The runner hands its return to this outputter (``{"data": …, "outputter":
"armswarm_imagebuild"}``); ``--out=json`` (or any ``--out``) still prints the full data.
The text is made by :mod:`armswarm_core.build.build_text`.

CLI Example:

.. code-block:: bash

    salt-run imagebuild.plan source=salt://images
    salt-run imagebuild.run source=salt://images --out=json   # the full data
"""

from armswarm_core.build import build_text

__virtualname__ = "armswarm_imagebuild"


def __virtual__():
    return __virtualname__


def output(data, **kwargs):  # noqa: ARG001 - Salt passes the outputter options
    """
    The build report or plan as text.

    CLI Example:

    .. code-block:: bash

        salt-run imagebuild.run
    """
    return build_text.render(data)
