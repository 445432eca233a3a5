#!/usr/bin/env nextflow
/*
 * tssc: temporal super-resolution of 4D MRI for cohorts, on one machine or a SLURM GPU cluster.
 *
 *   nextflow run main.nf -profile slurm_gpu,apptainer --input samplesheet.csv --outdir results
 *
 * --mode evaluate | upsample: INFERENCE on --input (after TRAINING on --train_input if given).
 * --mode train: TRAINING on --train_input only (stage 1, stage 2 and the --train_baselines).
 * Usage: docs/usage.md. The run's checks, its cohorts and the versions file:
 * subworkflows/local/utils_tssc_pipeline.
 */

include { PIPELINE_INITIALISATION; PIPELINE_COMPLETION; initialise; helpMessage; isTrue; checkpointKind; datasetLabel } from './subworkflows/local/utils_tssc_pipeline'
include { TRAINING  } from './workflows/training'
include { INFERENCE } from './workflows/inference'

workflow {
    def schema = "${projectDir}/nextflow_schema.json"
    if (isTrue(params.help)) {
        log.info helpMessage(schema)
        return
    }
    def plan = initialise(schema)
    PIPELINE_INITIALISATION(plan)

    def given = plan.given
    def checkpoints = given.values() as List
    ch_refine_checkpoint = params.refine_checkpoint && !plan.skipRefine
        ? channel.value(file(params.refine_checkpoint, checkIfExists: true))
        : channel.empty()
    if (plan.training) {
        given.findAll { kind, folder -> kind in plan.trained }.each { kind, folder ->
            log.warn "--checkpoint ${folder}: replaced by the ${kind} model trained in this run"
        }
        def kept = given.findAll { kind, folder -> !(kind in plan.trained) }
        // Stage 2 trains on the --refine_method output of the training subjects, made with that
        // method's own model (if it has one): trained here (TRAINING picks it) or else given.
        def refineKind = checkpointKind(params.refine_method)
        TRAINING(
            PIPELINE_INITIALISATION.out.train.map { meta, scan -> [meta + [mode: 'evaluate'], scan] },
            plan.baselines,
            !plan.skipRefine,
            params.refine_method,
            refineKind,
            kept.containsKey(refineKind) ? [kept[refineKind]] : []
        )
        def keptFolders = kept.values() as List
        checkpoints = TRAINING.out.checkpoints.toList().map { folders -> keptFolders + folders }
        if (params.refine_checkpoint && !plan.skipRefine) {
            log.warn "--refine_checkpoint ${params.refine_checkpoint}: replaced by the stage-2 model trained in this run"
        }
        ch_refine_checkpoint = TRAINING.out.refine_checkpoint
    }
    if (plan.inference) {
        def prepareMode = params.mode == 'train' ? 'evaluate' : params.mode
        def dataset = params.dataset ?: (plan.synth ? 'synthetic' : datasetLabel(params.input))
        INFERENCE(PIPELINE_INITIALISATION.out.input.map { meta, scan -> [meta + [mode: prepareMode], scan] }, checkpoints, ch_refine_checkpoint, dataset)
    }

    PIPELINE_COMPLETION()
}
