/*
 * What the pipeline does around its work (nf-core's utils subworkflow): the run's plan and its
 * checks (initialise), its cohorts (PIPELINE_INITIALISATION), the software versions file
 * (PIPELINE_COMPLETION). And the pipeline's parameter and samplesheet checks, its --help and its parameter summary, all
 * driven by nextflow_schema.json and assets/schema_input.json (the nf-schema plugin's job,
 * which cannot be installed offline). The JSON-schema keywords the two schemas use are the
 * ones read here: type, enum, pattern, minimum, maximum, multipleOf, format file-path /
 * directory-path with exists, required, errorMessage; for the samplesheet also meta,
 * minItems and uniqueEntries. A keyword added to a schema must be added here (a test reads
 * both schemas and refuses any other keyword).
 */

include { SYNTH } from '../../../modules/local/synth'

// The cohorts of the run, [ meta, scan ] each: read from the samplesheets, or made by tssc-synth
// (the test profile: 'cohort' stands for --input, 'train' for --train_input).
workflow PIPELINE_INITIALISATION {
    take:
    plan  // initialise()'s map

    main:
    def synthetic = []
    if (plan.inference && plan.synth) {
        synthetic << [id: 'cohort', seed: params.synth_seed.toString().toInteger()]
    }
    if (plan.training && plan.synthTrain) {
        synthetic << [id: 'train', seed: params.synth_seed.toString().toInteger() + 1]
    }
    SYNTH(channel.fromList(synthetic))
    // [ cohort, [ meta, scan ] ] of every synthetic subject, read as any samplesheet
    ch_synthetic = SYNTH.out.cohort.flatMap { meta, folder ->
        readSamplesheet(folder.resolve('samplesheet.csv')).collect { subject -> [meta.id, subject] }
    }

    ch_input = plan.synth
        ? ch_synthetic.filter { cohort, subject -> cohort == 'cohort' }.map { cohort, subject -> subject }
        : channel.fromList(params.input && plan.inference ? readSamplesheet(params.input) : [])
    ch_train = plan.synthTrain
        ? ch_synthetic.filter { cohort, subject -> cohort == 'train' }.map { cohort, subject -> subject }
        : channel.fromList(params.train_input ? readSamplesheet(params.train_input) : [])


    emit:
    input = ch_input  // [ meta, scan ] of --input (or the synthetic cohort)
    train = ch_train  // [ meta, scan ] of --train_input (or the synthetic training cohort)
}

// pipeline_info/software_versions.yml: every version the tasks reported, by process.
workflow PIPELINE_COMPLETION {
    main:
    channel.topic('versions')
        .map { versions -> versions.text }
        .collect()
        .map { texts -> mergeVersions(texts) }
        .collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info")
}

// Validate the parameters, log them, check that the run they describe can be done (every
// learned method has a model, mode-only options fit the mode) and return its plan: what runs,
// with which models. Stops the run, before any task, at the first problem.
def initialise(schemaPath) {
    validateParameters(schemaPath, params)
    log.info paramsSummary(schemaPath, params)

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

    return [
        synth: synth, synthTrain: synthTrain, skipRefine: skipRefine, training: training,
        inference: inference, baselines: baselines, trained: trained, given: given,
    ]
}

// A boolean param as a boolean: true, or the command-line string 'true' (any case).
def isTrue(value) {
    return value instanceof Boolean ? value : value != null && value.toString().toLowerCase() == 'true'
}

// The checkpoint kind (config.json "kind") of a method's trained model; null for a method without
// one: each method's checkpoint_kind in tssc_py.methods, written by python -m tssc_py.schema.
def checkpointKind(method) {
    return [diffusion: 'stage1', transmorph: 'transmorph', uvinet: 'uvinet', voxelmorph: 'voxelmorph'][method]
}

// Whether a method needs a trained model of a kind not among the available ones.
def lacksModel(method, available) {
    def kind = checkpointKind(method)
    return kind != null && !(kind in available)
}

// --checkpoint: comma-separated checkpoint/ folders, at most one of each kind -> [ kind: folder ].
def checkpointsByKind(list) {
    // The kinds (config.json "kind") of the learned methods' checkpoints, written by
    // python -m tssc_py.schema.
    def kinds = ['stage1', 'transmorph', 'uvinet', 'voxelmorph']
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
        error "${sheet}: ${meta.id}: ${scan}: detached-header images are not staged with their data file; convert to .mha or .nrrd"
    }
    def suffix = ['.nii.gz', '.nii', '.mha', '.nrrd'].find { known -> name.endsWith(known) }
    if (!suffix) {
        error "${sheet}: ${meta.id}: ${scan}: unsupported file type; use .nii, .nii.gz, .mha or .nrrd"
    }
    if (!path.exists()) {
        error "${sheet}: ${meta.id}: ${scan}: no such file"
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

// The method name of stage 2 over a method's output: 'tssc' over diffusion (the full TSSC-Net),
// METHOD_sc over any other (tssc_py.runs.refined_name; a test keeps them equal).
def refinedName(method) {
    return method == 'diffusion' ? 'tssc' : "${method}_sc"
}

// Every parameter the schema declares: name -> [group title, its schema entry].
def schemaParams(schemaPath) {
    def schema = new groovy.json.JsonSlurper().parse(file(schemaPath).toFile())
    def declared = [:]
    schema['$defs'].each { name, group ->
        group.properties.each { param, entry -> declared[param] = [group.title, entry] }
    }
    return declared
}

// Parameters the schema marks required at the top of a group.
def requiredParams(schemaPath) {
    def schema = new groovy.json.JsonSlurper().parse(file(schemaPath).toFile())
    return schema['$defs'].values().collectMany { group -> group.required ?: [] }
}

// A value typed as the schema says, or null when it is not one. Command-line values reach
// params as strings under the strict syntax parser, numbers and booleans under the legacy one;
// both are read.
def schemaValue(value, type) {
    def text = value.toString().trim()
    if (type == 'boolean') {
        return value instanceof Boolean ? value : (text.toLowerCase() in ['true', 'false'] ? text.toLowerCase() == 'true' : null)
    }
    if (value instanceof Boolean) {
        return null
    }
    if (type == 'integer') {
        return text ==~ /[+-]?\d+/ ? new BigInteger(text.replaceFirst(/^\+/, '')) : null
    }
    if (type == 'number') {
        return text ==~ /[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?/ ? new BigDecimal(text.replaceFirst(/^\+/, '')) : null
    }
    return text
}

// What is wrong with one value against its schema entry; null when nothing is.
def valueProblem(value, entry) {
    def typed = schemaValue(value, entry.type)
    if (typed == null) {
        def article = entry.type == 'integer' ? 'an' : 'a'
        return value instanceof Boolean ? 'needs a value' : "must be ${article} ${entry.type}"
    }
    if (entry['enum'] != null && !entry['enum'].any { allowed -> allowed.toString() == typed.toString() }) {
        return "must be one of ${entry['enum'].join(', ')}"
    }
    if (entry.pattern != null && !(typed.toString() =~ entry.pattern).find()) {
        return entry.errorMessage ?: "must match ${entry.pattern}"
    }
    if (entry.minimum != null && typed < (entry.minimum as BigDecimal)) {
        return "must be at least ${entry.minimum}"
    }
    if (entry.maximum != null && typed > (entry.maximum as BigDecimal)) {
        return "must be at most ${entry.maximum}"
    }
    if (entry.multipleOf != null && (typed as BigDecimal).remainder(entry.multipleOf as BigDecimal) != 0) {
        return "must be a multiple of ${entry.multipleOf}"
    }
    if (entry.exists && entry.format in ['file-path', 'directory-path']) {
        def path = file(typed.toString())
        if (!path.exists()) {
            return 'no such file or folder'
        }
        if (entry.format == 'file-path' && path.isDirectory()) {
            return 'is a folder, not a file'
        }
        if (entry.format == 'directory-path' && !path.isDirectory()) {
            return 'is a file, not a folder'
        }
    }
    return null
}

// The declared name a mistyped parameter stands for (case, '-' and '_' aside), or null.
def knownSpelling(name, declared) {
    return declared.keySet().find { known -> plainName(known) == plainName(name) }
}

def plainName(text) {
    return text.toLowerCase().replaceAll(/[-_]/, '')
}

// Stop the run with a samplesheet's problem: the sheet, the line (null: the whole sheet), what.
def sheetError(sheet, line, message) {
    def where = line ? "line ${line}: " : ''
    error "${sheet}: ${where}${message}"
}

// Stop the run, before any task, when a parameter is unknown, missing or breaks its schema
// rule: one message listing each such parameter, its value and the rule.
def validateParameters(schemaPath, values) {
    def declared = schemaParams(schemaPath)
    def problems = []
    values.each { name, value ->
        def entry = declared[name]?.getAt(1)
        if (entry == null) {
            def spelling = knownSpelling(name, declared)
            def hint = spelling ? "; did you mean --${spelling}?" : ''
            problems << "--${name}: unknown parameter${hint} (nextflow run main.nf --help lists them)"
        }
        else if (value != null) {
            def problem = valueProblem(value, entry)
            if (problem) {
                problems << "--${name} '${value}': ${problem}"
            }
        }
    }
    requiredParams(schemaPath).findAll { name -> values[name] == null || values[name].toString().trim() == '' }.each { name ->
        problems << "--${name}: required (${declared[name][1].description})"
    }
    if (problems) {
        error "Invalid parameters:\n" + problems.collect { problem -> "  * ${problem}" }.join('\n')
    }
}

// --help: the usage line and every parameter that is not hidden, by group, with its default.
def helpMessage(schemaPath) {
    def usage = 'nextflow run main.nf -profile slurm_gpu,apptainer --input samplesheet.csv --outdir results'
    def lines = ["Usage: ${usage}", '']
    def shown = schemaParams(schemaPath).findAll { name, item -> !item[1].hidden }
    def width = shown.keySet()*.size().max() + 2
    shown.groupBy { name, item -> item[0] }.each { title, group ->
        lines << "${title}:"
        group.each { name, item ->
            def entry = item[1]
            def deflt = entry.default != null ? " [default: ${entry.default}]" : ''
            lines << "  --${name.padRight(width)}[${entry.type}] ${entry.description}${deflt}"
        }
        lines << ''
    }
    lines << 'Profiles: test, gpu, slurm_gpu, docker, singularity, apptainer (-profile a,b). Documentation: docs/usage.md'
    return lines.join('\n')
}

// The parameters this run sets to other than their schema default, by group, for the log.
def paramsSummary(schemaPath, values) {
    def lines = []
    schemaParams(schemaPath).groupBy { name, item -> item[0] }.each { title, group ->
        def set = group.findAll { name, item -> values[name] != null && values[name].toString() != item[1].default?.toString() && !item[1].hidden }
        if (set) {
            lines << "${title}:"
            set.each { name, item -> lines << "  ${name}: ${values[name]}" }
        }
    }
    return lines.join('\n')
}

// The rows of a samplesheet CSV checked against assets/schema_input.json: [ meta, scan ] each,
// meta holding the columns the schema marks meta (integer columns as Integer, empty ones null).
// The first problem stops the run with the sheet, the line and the rule.
def samplesheetToList(sheet, schemaPath) {
    def schema = new groovy.json.JsonSlurper().parse(file(schemaPath).toFile())
    def columns = schema.items.properties
    def lines = sheet.readLines()
    // Spreadsheet programs start "CSV UTF-8" files with a byte-order mark.
    def header = lines ? lines[0].replaceFirst(/^\uFEFF/, '').tokenize(',')*.trim() : []
    def rows = lines.any { line -> line.trim() } ? sheet.splitCsv(header: header, skip: 1, quote: '"') : []
    def missing = schema.items.required.findAll { name -> !(name in header) }
    if (missing) {
        sheetError(sheet, null, "samplesheet is missing column(s): ${missing.join(', ')}")
    }
    if (rows.size() < (schema.minItems ?: 0)) {
        sheetError(sheet, null, 'samplesheet has no rows')
    }
    def seen = [:]
    return rows.withIndex().collect { row, index ->
        def line = index + 2
        def cells = [:]
        row.each { name, cell -> cells[name.trim()] = cell == null || cell.trim() == '' ? null : cell.trim() }
        schema.items.required.findAll { name -> cells[name] == null }.each { name ->
            sheetError(sheet, line, "empty ${name}")
        }
        def typed = [:]
        columns.each { name, entry ->
            if (cells[name] != null) {
                def problem = valueProblem(cells[name], entry)
                if (problem) {
                    sheetError(sheet, line, "${name} '${cells[name]}': ${entry.errorMessage ?: problem}")
                }
                typed[name] = entry.type == 'integer' ? schemaValue(cells[name], 'integer').toInteger() : cells[name]
            }
        }
        def key = schema.uniqueEntries.collect { name -> typed[name] }
        if (seen.containsKey(key)) {
            sheetError(sheet, line, "duplicate ${schema.uniqueEntries.join(', ')} '${key.join(', ')}' (line ${seen[key]})")
        }
        seen[key] = line
        def meta = [:]
        columns.findAll { name, entry -> entry.meta }.each { name, entry -> meta[entry.meta[0]] = typed[name] }
        return [meta, typed.scan]
    }
}
