"""Zero-shot CLIP on chest X-rays, the prompt set searched, a linear probe as baseline (study A.3).

    $ tune-run spaces/zeroshot.py --smoke-test
    $ tune-run spaces/zeroshot.py --data /data/COVID-19_Radiography_Dataset --gpus-per-trial 1

The study classified the four classes with CLIP ViT-L and one text prompt per class: two
prompt sets gave macro F1 0.43 and 0.17, so prompts matter enormously. Here the prompt set
is a searched hyperparameter (the sets are PROMPT_SETS below: label only, descriptive
radiology sentences, and template / sentence ensembles averaged in embedding space), beside
the model (ViT-L-14 and the medical BiomedCLIP) and, as the baseline zero-shot should be
judged against, a logistic-regression probe on the frozen image features.

Weights come from the local Hugging Face cache only; fetch them once on a machine with
network access and copy the cache (~/.cache/huggingface) to the nodes:
    hf download laion/CLIP-ViT-L-14-laion2B-s32B-b82K
    hf download microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224
    hf download microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract    (BiomedCLIP's text tower)
OpenAI's ViT-L weights as a local file instead:
    --set clip/model=ViT-L-14-quickgelu --set model/pretrained=/models/open_clip_pytorch_model.bin
(from `hf download timm/vit_large_patch14_clip_224.openai open_clip_pytorch_model.bin`).
Nothing is trained, so one epoch is all there is (train/epochs=1).
"""
import json
import os

TRAINABLE = "zeroshot"
OBJECTIVES = {"val/f1_macro": "max", "perf/train_images_per_s": "max"}

# Keys are the class folders of the COVID-19 Radiography Database (and of the synthetic set).
PROMPT_SETS = {
    # the study's short style: the class name alone ("lung opacity", "viral pneumonia")
    "label": ["{}"],
    # the study's descriptive style: one radiology sentence per class
    "radiology": {
        "COVID": ["A chest X-ray with bilateral peripheral ground-glass opacities typical of COVID-19 pneumonia."],
        "Lung_Opacity": ["A chest X-ray with an area of increased opacity in the lung."],
        "Normal": ["A normal chest X-ray with clear lungs."],
        "Viral Pneumonia": ["A chest X-ray with diffuse interstitial infiltrates of viral pneumonia."],
    },
    # a single generic template
    "xray_of": ["a chest X-ray of {}."],
    # template ensemble: embeddings of all templates averaged per class
    "xray_templates": ["a chest X-ray of {}.", "a chest radiograph showing {}.", "an X-ray image of a patient with {}.",
                       "a frontal chest X-ray, finding: {}.", "a radiology image of {}."],
    # sentence ensemble: several descriptions per class, averaged
    "radiology_ensemble": {
        "COVID": ["A chest X-ray with bilateral peripheral ground-glass opacities typical of COVID-19 pneumonia.",
                  "A chest radiograph of a patient with COVID-19.",
                  "Multifocal patchy consolidation in the lower lung zones on a chest X-ray."],
        "Lung_Opacity": ["A chest X-ray with an area of increased opacity in the lung.",
                         "A chest radiograph showing a lung opacity.",
                         "A focal consolidation on a chest X-ray."],
        "Normal": ["A normal chest X-ray with clear lungs.",
                   "A chest radiograph with no acute cardiopulmonary abnormality.",
                   "Healthy lungs on a chest X-ray."],
        "Viral Pneumonia": ["A chest X-ray with diffuse interstitial infiltrates of viral pneumonia.",
                            "A chest radiograph of a patient with viral pneumonia.",
                            "Bilateral reticular opacities on a chest X-ray."],
    },
}

CLIP_MODELS = [
    "hf-hub:laion/CLIP-ViT-L-14-laion2B-s32B-b82K",                     # CLIP ViT-L-14, as in the study
    "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",  # medical CLIP (PubMed figures)
]

DEFAULTS = {
    "clip/prompt_sets": json.dumps(PROMPT_SETS),
    "clip/model": CLIP_MODELS[0],
    "data/image_size": 224,      # decoded at the models' input size
    "data/channels": 3,
    "train/epochs": 1,           # nothing is trained; see trainables/zeroshot.py
    "train/batch_size": 64,      # images per forward pass of the frozen image encoder
}

# A fresh clone has no weights: a tiny architecture shipped with the repository, random weights.
SMOKE = {
    "clip/model": "medtune-tiny-clip",
    "clip/model_config": os.path.join(os.path.dirname(os.path.abspath(__file__)), "clip_configs",
                                      "medtune-tiny-clip.json"),
    "model/pretrained": "",
    "data/image_size": 32,
    "train/batch_size": 32,
}


def space(trial):
    trial.suggest_categorical("clip/model", CLIP_MODELS)
    mode = trial.suggest_categorical("clip/mode", ["zeroshot", "linear_probe"])
    if mode == "zeroshot":
        trial.suggest_categorical("clip/prompt_set", list(PROMPT_SETS))
    else:
        trial.suggest_float("clip/probe_c", 1e-3, 1e2, log=True)
