"""quantgate's library layer: data, labels, recipes, packaging, tracking, the serving pyfunc,
the ONNX graph helpers and one backend per runtime. It imports nothing from the steps
(``flows``), the gate (``registry_hooks``) or the evaluator plugin (``evaluators``)."""
