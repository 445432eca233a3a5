/*
 * The pipeline's parameter and samplesheet checks, its --help and its parameter summary, all
 * driven by nextflow_schema.json and assets/schema_input.json (the nf-schema plugin's job,
 * which cannot be installed offline). The JSON-schema keywords the two schemas use are the
 * ones read here: type, enum, pattern, minimum, maximum, multipleOf, format file-path /
 * directory-path with exists, required, errorMessage; for the samplesheet also meta,
 * minItems and uniqueEntries. A keyword added to a schema must be added here (a test reads
 * both schemas and refuses any other keyword).
 */

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
    def width = schemaParams(schemaPath).findAll { name, item -> !item[1].hidden }.keySet()*.size().max() + 2
    schemaParams(schemaPath).findAll { name, item -> !item[1].hidden }.groupBy { name, item -> item[0] }.each { title, group ->
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
