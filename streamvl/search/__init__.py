"""Text -> vectors -> pre-filtered ANN -> segments -> rerank."""
