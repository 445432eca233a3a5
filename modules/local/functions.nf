/*
 * Shell quoting for process scripts. Every value a script: or stub: block passes to a command
 * goes through one of these, so file names with spaces or quotes reach the command unchanged.
 */

// The value as one single-quoted shell word (a ' inside becomes '\'').
def shellQuote(value) {
    return "'" + value.toString().replace("'", "'\\''") + "'"
}

// A command-line option: nothing for null or false, the bare flag for true, else flag and value.
def optionArg(flag, value) {
    if (value == null || value == false) {
        return ''
    }
    return value == true ? flag : "${flag} ${shellQuote(value)}"
}

// Staged files as a list: Nextflow hands a path input holding one file as that file (a Path
// is also an Iterable of its name parts, so it must not be iterated), several as a list.
def stagedList(files) {
    return files instanceof java.nio.file.Path ? [files] : (files ?: [])
}

// Each staged file as one quoted shell word, blank-separated (nothing for none).
def shellQuoteAll(files) {
    return stagedList(files).collect { file -> shellQuote(file) }.join(' ')
}

// A repeatable option, once per staged file: --flag 'a' --flag 'b' (nothing for none).
def optionArgs(flag, files) {
    return stagedList(files).collect { file -> optionArg(flag, file) }.join(' ')
}

// A process's options from its ext.options map (conf/modules.config): --name 'value' for each
// entry that is not null or false, the bare --name for true; names are the commands' options.
def extOptions(options) {
    return (options ?: [:]).collect { name, value -> optionArg("--${name}", value) }.findAll { text -> text }.join(' ')
}

// A stub's versions.yml, written without Python: the pipeline's own version is tssc's (a test
// keeps manifest.version equal to tssc_py.__version__).
def stubVersions(process, version) {
    def yaml = "\"${process}\":\n    tssc: \"${version}\"\n"
    return "printf '%s' ${shellQuote(yaml)} > versions.yml"
}
