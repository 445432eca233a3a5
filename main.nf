#!/usr/bin/env nextflow
/*
 * tssc: temporal super-resolution of 4D MRI for cohorts, on one machine or a SLURM GPU cluster.
 *
 *   nextflow run main.nf -profile slurm_gpu,apptainer --input samplesheet.csv --outdir results
 *
 * --mode evaluate | upsample: INFERENCE on --input (after TRAINING on --train_input if given).
 * --mode train: TRAINING on --train_input only (stage 1, stage 2 and the --train_baselines).
 * See README "Running on a cluster with Nextflow".
 */

include { validateParameters; paramsSummary; helpMessage; samplesheetToList } from './subworkflows/local/utils_tssc_pipeline'
include { SYNTH     } from './modules/local/synth'
include { TRAINING  } from './workflows/training'
include { INFERENCE; refinedName } from './workflows/inference'

workflow {
    def schema = "${projectDir}/nextflow_schema.json"
    if (isTrue(params.help)) {
        log.info helpMessage(schema)
        return
    }
    validateParameters(schema, params)
    log.info paramsSummary(schema, params)

    // Boolean and number params: under the strict syntax parser (the default since Nextflow
    // 26.04) a command-line value is a string ('false' is truthy); validateParameters() only
    // checks a converted copy. Read them through isTrue() and toInteger().
    def synth = isTrue(params.synth)
    def synthTrain = isTrue(params.synth_train)
    def skipRefine = isTrue(params.skip_refine)
    def training = params.mode == 'train' || params.train_input || synthTrain
    def inference = params.mode != 'train'
    if (inference && !params.input && !synth) {
        error "--input (a samplesheet) is required in --mode ${params.mode}"
    }
    if (params.mode == 'train' && !params.train_input && !synthTrain) {
        error '--train_input (a samplesheet) is required in --mode train'
    }
    if (params.frames_between != null && params.mode != 'upsample') {
        error "--frames_between is only used with --mode upsample (--mode ${params.mode})"
    }
    if (params.known_every != null && params.mode == 'upsample') {
        error '--known_every is only used with --mode evaluate (and the training preparations)'
    }

    // Every learned method's checkpoint, by kind: those given, then those trained in this run,
    // which replace a given one of the same kind. A learned method with neither stops the run
    // here, before anything runs.
    def given = params.checkpoint ? checkpointsByKind(params.checkpoint) : [:]
    def methods = params.methods.tokenize(',')*.trim()
    def baselines = params.train_baselines ? params.train_baselines.tokenize(',')*.trim().unique() : []
    // kinds trained here: stage 1 ('stage1', tssc_py.stage1.train.KIND) and each baseline
    def trained = training ? ['stage1'] + baselines : []
    def available = given.keySet() + trained
    def missing = inference ? methods.findAll { method -> lacksModel(method, available) }.unique() : []
    if (missing) {
        error "--methods ${missing.join(', ')}: no trained model; give its checkpoint/ folder with --checkpoint (kind ${missing.collect { method -> checkpointKind(method) }.join(', ')}), or train it in this run (--train_input, --train_baselines)"
    }
    if (training && !skipRefine && lacksModel(params.refine_method, available)) {
        error "--refine_method ${params.refine_method}: stage 2 trains on its output, and it has no trained model; give its checkpoint/ folder with --checkpoint (kind ${checkpointKind(params.refine_method)}), add it to --train_baselines, or give --skip_refine"
    }
    if (inference && !skipRefine && !(params.refine_method in methods)) {
        if (params.refine_checkpoint) {
            error "--refine_checkpoint: stage 2 refines the ${params.refine_method} output; add ${params.refine_method} to --methods (or give --skip_refine)"
        }
        if (training) {
            log.warn "stage 2 trained in this run refines the ${params.refine_method} output, which --methods does not include: no ${refinedName(params.refine_method)} output"
        }
    }

    // Synthetic cohorts (the test profile): 'cohort' stands for --input, 'train' for --train_input.
    def synthetic = []
    if (inference && synth) {
        synthetic << [id: 'cohort', seed: params.synth_seed.toString().toInteger()]
    }
    if (training && synthTrain) {
        synthetic << [id: 'train', seed: params.synth_seed.toString().toInteger() + 1]
    }
    SYNTH(channel.fromList(synthetic))
    ch_synthetic = SYNTH.out.cohort.flatMap { meta, folder ->
        def sheet = folder.resolve('samplesheet.csv')
        sheet.splitCsv(header: true).collect { row ->
            scanInput([id: meta.id, subject: row.subject], row.scan, sheet)
        }
    }

    def prepareMode = params.mode == 'train' ? 'evaluate' : params.mode
    ch_input = synth
        ? ch_synthetic.filter { meta, scan -> meta.id == 'cohort' }
        : channel.fromList(params.input && inference ? readSamplesheet(params.input) : [])
    ch_train = synthTrain
        ? ch_synthetic.filter { meta, scan -> meta.id == 'train' }
        : channel.fromList(params.train_input ? readSamplesheet(params.train_input) : [])

    def checkpoints = given.values() as List
    ch_refine_checkpoint = params.refine_checkpoint && !skipRefine
        ? channel.value(file(params.refine_checkpoint, checkIfExists: true))
        : channel.empty()
    if (training) {
        given.findAll { kind, folder -> kind in trained }.each { kind, folder ->
            log.warn "--checkpoint ${folder}: replaced by the ${kind} model trained in this run"
        }
        def kept = given.findAll { kind, folder -> !(kind in trained) }
        // Stage 2 trains on the --refine_method output of the training subjects, made with that
        // method's own model (if it has one): trained here (TRAINING picks it) or else given.
        def refineKind = checkpointKind(params.refine_method)
        TRAINING(
            ch_train.map { meta, scan -> [meta + [mode: 'evaluate'], scan] },
            baselines,
            !skipRefine,
            params.refine_method,
            refineKind,
            kept.containsKey(refineKind) ? [kept[refineKind]] : []
        )
        def keptFolders = kept.values() as List
        checkpoints = TRAINING.out.checkpoints.toList().map { folders -> keptFolders + folders }
        if (params.refine_checkpoint && !skipRefine) {
            log.warn "--refine_checkpoint ${params.refine_checkpoint}: replaced by the stage-2 model trained in this run"
        }
        ch_refine_checkpoint = TRAINING.out.refine_checkpoint
    }
    if (inference) {
        def dataset = params.dataset ?: (synth ? 'synthetic' : datasetLabel(params.input))
        INFERENCE(ch_input.map { meta, scan -> [meta + [mode: prepareMode], scan] }, checkpoints, ch_refine_checkpoint, dataset)
    }

    channel.topic('versions')
        .map { versions -> versions.text }
        .collect()
        .map { texts -> mergeVersions(texts) }
        .collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info")
}

// A boolean param as a boolean: true, or the command-line string 'true' (any case).
def isTrue(value) {
    return value instanceof Boolean ? value : value != null && value.toString().toLowerCase() == 'true'
}

// The checkpoint kind (config.json "kind") of a method's trained model; null for a method without
// one. tssc_py.methods: each method's checkpoint_kind (a test keeps them equal).
def checkpointKind(method) {
    return [diffusion: 'stage1', voxelmorph: 'voxelmorph', transmorph: 'transmorph', uvinet: 'uvinet'][method]
}

// Whether a method needs a trained model of a kind not among the available ones.
def lacksModel(method, available) {
    def kind = checkpointKind(method)
    return kind != null && !(kind in available)
}

// --checkpoint: comma-separated checkpoint/ folders, at most one of each kind -> [ kind: folder ].
def checkpointsByKind(list) {
    // The kinds (config.json "kind") of the learned methods' checkpoints:
    // tssc_py.stage1.train.KIND and tssc_py.baselines.MODELS (a test keeps them equal).
    def kinds = ['stage1', 'voxelmorph', 'transmorph', 'uvinet']
    def found = [:]
    list.tokenize(',')*.trim().findAll { text -> text }.each { text ->
        def folder = file(text, checkIfExists: true)
        def config = folder.resolve('config.json')
        if (!config.exists()) {
            error "--checkpoint ${text}: no config.json; give checkpoint/ folders of tssc-train-stage1 or tssc-train-baseline"
        }
        def kind = new groovy.json.JsonSlurper().parseText(config.text).kind
        if (!(kind in kinds)) {
            error "--checkpoint ${text}: a '${kind}' checkpoint; give checkpoint/ folders of kind ${kinds.join(', ')} (stage 2: --refine_checkpoint)"
        }
        if (found.containsKey(kind)) {
            error "--checkpoint: two ${kind} checkpoints, ${found[kind]} and ${folder}; give one of each kind"
        }
        found[kind] = folder
    }
    return found
}

// The report's default dataset label: the samplesheet's name without .csv, each run of
// characters other than letters, digits, '.', '_', '-' made '_' (tssc_py.report.folder_label).
def datasetLabel(sheet) {
    def label = file(sheet).baseName.replaceAll(/[^A-Za-z0-9._-]+/, '_')
    return label.replace('.', '') ? label : 'dataset'
}

// Rows of a samplesheet, validated against assets/schema_input.json: [ meta, scan ].
def readSamplesheet(sheet) {
    def path = file(sheet, checkIfExists: true)
    return samplesheetToList(path, "${projectDir}/assets/schema_input.json").collect { meta, scan ->
        scanInput(meta, scan, path)
    }
}

// [ meta, scan path ] of one row; relative scan paths are relative to the samplesheet, as in
// tssc-run. meta: subject, start_frame, end_frame (null when absent) and the result's suffix.
def scanInput(meta, cell, sheet) {
    def scan = cell.trim()
    def path = scan.startsWith('/') || scan.contains('://') ? file(scan) : sheet.parent.resolve(scan)
    def name = path.name.toLowerCase()
    if (name.endsWith('.mhd') || name.endsWith('.nhdr')) {
        error "${sheet}: ${meta.subject}: ${scan}: detached-header images are not staged with their data file; convert to .mha or .nrrd"
    }
    def suffix = ['.nii.gz', '.nii', '.mha', '.nrrd'].find { known -> name.endsWith(known) }
    if (!suffix) {
        error "${sheet}: ${meta.subject}: ${scan}: unsupported file type; use .nii, .nii.gz, .mha or .nrrd"
    }
    if (!path.exists()) {
        error "${sheet}: ${meta.subject}: ${scan}: no such file"
    }
    def frames = [:]
    ['start_frame', 'end_frame'].each { key -> frames[key] = meta[key] instanceof Integer ? meta[key] : null }
    return [meta + frames + [suffix: suffix], path]
}

// One software_versions.yml for the run: every version each process reported, by process.
def mergeVersions(texts) {
    def merged = new TreeMap()
    texts.each { text ->
        new org.yaml.snakeyaml.Yaml().load(text).each { process, tools ->
            def entry = merged.get(process.tokenize(':').last(), new TreeMap())
            tools.each { tool, version -> entry.get(tool, new TreeSet()) << version.toString() }
        }
    }
    return merged.collect { process, tools ->
        "${process}:\n" + tools.collect { tool, versions -> "    ${tool}: \"${versions.join(', ')}\"" }.join('\n')
    }.join('\n') + '\n'
}
