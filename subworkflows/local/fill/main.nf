/*
 * Stage 1 on prepared subjects: SPLIT each subject into chunks of slices, INTERPOLATE every
 * chunk with every method (one task each), ASSEMBLE the filled chunks of each subject and method.
 */

include { SPLIT       } from '../../../modules/local/split'
include { INTERPOLATE } from '../../../modules/local/interpolate'
include { ASSEMBLE    } from '../../../modules/local/assemble'

workflow FILL {
    take:
    ch_prepared  // [ meta, volume, record ]
    methods      // list of method names
    checkpoints  // checkpoint/ folders of the learned methods (a list, possibly empty)

    main:

    SPLIT(ch_prepared)

    // Each chunk carries its subject's chunk count so that groupTuple can emit a subject as
    // soon as its last chunk is filled instead of waiting for the whole cohort.
    ch_tasks = SPLIT.out.chunks
        .flatMap { meta, chunks ->
            def files = chunks instanceof List ? chunks : [chunks]
            files.collect { chunk -> [meta + [chunks: files.size()], chunk] }
        }
        .combine(channel.fromList(methods))
        .map { meta, chunk, method -> [meta + [method: method], chunk] }

    INTERPOLATE(ch_tasks, checkpoints)

    ch_records = ch_prepared.map { meta, volume, record -> [meta.id, record] }
    ch_grouped = INTERPOLATE.out.filled
        .map { meta, chunk -> [groupKey(meta, meta.chunks), chunk] }
        .groupTuple()
        .map { key, chunks -> [key.getGroupTarget(), chunks] }
    ASSEMBLE(withRecord(ch_grouped, ch_records))

    emit:
    filled   = withRecord(ASSEMBLE.out.filled, ch_records)  // [ meta, filled volume, record ]
}

// [ meta, files ] joined with its subject's record: [ meta, files, record ].
def withRecord(ch_items, ch_records) {
    return ch_items
        .map { meta, files -> [meta.id, meta, files] }
        .combine(ch_records, by: 0)
        .map { subject, meta, files, record -> [meta, files, record] }
}
