# AgeMapper: brain ages, brain-age deltas and their nIDP associations for 57 UK Biobank MRI
# contrasts. This file is the table of contents; each stage lives in workflow/rules/.
from snakemake.utils import min_version

min_version("9.0")


# With no --configfile (nor a profile that names one), the demo runs. A config given on the
# command line stands alone: nothing of the demo is merged under it (config/README.md).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/synthetic.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/ensembles.smk"
include: "workflow/rules/deltas.smk"
include: "workflow/rules/nidps.smk"
include: "workflow/rules/associations.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
