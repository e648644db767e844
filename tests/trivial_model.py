"""A trivial pyfunc "model from code" for registry tests that need many cheap, real versions."""

import mlflow


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [0] * len(model_input)


mlflow.models.set_model(Constant())
