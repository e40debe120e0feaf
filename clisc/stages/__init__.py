"""Figure-1 stages of CLISC, one module each.

- ``slice_labels``: CLIP zero-shot slice labels (+ the code's confidence filter and z smoothing)
- ``classifier``: ResNet50 slice classifier training and prediction
- ``cam``: Layer-CAM, CAM binarisation and 3D post-processing
- ``amda``: adaptive masking data augmentation (+ the shipped code's intensity fallback)
- ``prompts``, ``pseudo_labels``: SAM prompts from CAM ROIs and SAM pseudo-labels
- ``unet3d``, ``s3f``: 3D U-Net and SAM-Seg similarity filtering (self-training)
"""
