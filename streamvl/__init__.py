"""streamvl: index recorded and live video with image-language models.

Nothing heavy happens at import time; torch, Ray and LanceDB are imported where used.
"""

__version__ = "0.1.0"
