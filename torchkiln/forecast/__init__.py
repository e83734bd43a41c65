"""Time-series forecasting: the `forecast` task, series datasets (csv_series,
bundled_series), forecasting models (lstm, gru, tcn, nbeats), losses (`forecast_loss`) and
the load_series / train_forecast / evaluate_forecast stage kinds.

Importing the pack registers its light config modules (no torch, numpy or pandas) and
declares its run-time hooks lazily: the `series` dataset format (read by
`torchkiln.forecast.loading`) and the preprocessor of the "series" modality
(`torchkiln.forecast.preprocess`: scaling, inside exported models too).
"""

from torchkiln.data.formats import register_format, register_predictor, register_preprocessor
from torchkiln.forecast import datasets, losses, models, stages, task

__all__ = ["datasets", "losses", "models", "stages", "task"]

register_format("series", "torchkiln.forecast.loading:read_series")
register_preprocessor("series", "torchkiln.forecast.preprocess:series_preprocessor")
register_predictor("series", "torchkiln.forecast.predict:predict_series")
