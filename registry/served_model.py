"""The served model, as code: MLflow logs this file as the model (models-from-code).

Loading a version runs this file and builds :class:`registry.pyfunc_model.VLMPyfunc` from the
code logged beside it (``code/registry``, ``code/components``); nothing is unpickled, so the
artifact store holds no serialized object that runs when a server starts. The weights come
from the ``hf_model`` artifact (safetensors) in ``VLMPyfunc.load_context``.
"""

from mlflow.models import set_model

from registry.pyfunc_model import VLMPyfunc

set_model(VLMPyfunc())
