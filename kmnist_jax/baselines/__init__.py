"""The fitted baselines of the rois-codh table: k-NN, PCA + k-NN and SVM."""
