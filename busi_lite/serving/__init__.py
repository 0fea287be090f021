"""Serving: predictions, safety flags, lesion geometry, overlays, lesion boxes, install info.
Never imports training code."""
