/*
 * --mode evaluate / upsample: PREPARE -> FILL (SPLIT, INTERPOLATE per chunk and method,
 * ASSEMBLE) -> REFINE (stage 2) -> RESTORE -> METRICS -> REPORT (evaluate mode only: the
 * tables, figures and report.html of tssc-run).
 */

include { PREPARE } from '../modules/local/prepare'
include { REFINE  } from '../modules/local/refine'
include { RESTORE } from '../modules/local/restore'
include { METRICS } from '../modules/local/metrics'
include { REPORT  } from '../modules/local/report'
include { FILL; withRecord } from '../subworkflows/local/fill'
include { refinedName      } from '../subworkflows/local/utils_tssc_pipeline'

workflow INFERENCE {
    take:
    ch_scans              // [ meta, scan ]
    checkpoints           // checkpoint/ folders of the learned methods (a list, possibly empty)
    ch_refine_checkpoint  // stage-2 checkpoint folder; empty: no refinement
    dataset               // the cohort's label in the report

    main:
    PREPARE(ch_scans)

    def methods = params.methods.tokenize(',')*.trim().unique()
    FILL(PREPARE.out.prepared, methods, checkpoints)

    // Stage 2 refines the --refine_method output; the result is a method of its own, named
    // after what it refines (refinedName: 'tssc' for diffusion, as tssc-run reports it).
    ch_refine = FILL.out.filled
        .filter { meta, filled, record -> meta.method == params.refine_method }
        .map { meta, filled, record -> [meta + [method: refinedName(meta.method)], filled, record] }
        .combine(ch_refine_checkpoint)
    REFINE(ch_refine)
    ch_records = PREPARE.out.prepared.map { meta, volume, record -> [meta.id, record] }
    ch_filled = FILL.out.filled.mix(withRecord(REFINE.out.refined, ch_records))

    RESTORE(ch_filled)

    if (params.mode == 'evaluate') {
        ch_truth = PREPARE.out.prepared.map { meta, volume, record -> [meta.id, volume] }
        ch_scores = ch_filled
            .map { meta, filled, record -> [meta.id, meta, filled, record] }
            .combine(ch_truth, by: 0)
            .map { subject, meta, filled, record, truth -> [meta, filled, truth, record] }
        METRICS(ch_scores)

        // The example figures show one subject: its prepared truth and every method's series.
        ch_figure_subject = ch_scans.map { meta, scan -> meta.id }.toList().map { subjects -> figureSubject(subjects) }
        ch_example_prepared = PREPARE.out.prepared
            .combine(ch_figure_subject)
            .filter { meta, volume, record, subject -> meta.id == subject }
            .map { meta, volume, record, subject -> [volume, record] }
            .collect()
        // Each series is METHOD/SUBJECT.nii in its task's folder: the METHOD folder is staged.
        ch_example_filled = ch_filled
            .combine(ch_figure_subject)
            .filter { meta, filled, record, subject -> meta.id == subject }
            .map { meta, filled, record, subject -> filled.parent }
            .collect()
        REPORT(
            dataset,
            ch_figure_subject,
            METRICS.out.frames.map { meta, frames -> frames }.collect(),
            ch_example_prepared,
            ch_example_filled
        )
    }

    emit:
    restored = RESTORE.out.restored
}

// --figure_subject, checked against the input's subjects; by default the first, as tssc-run.
def figureSubject(subjects) {
    if (!params.figure_subject) {
        return subjects[0]
    }
    if (!(params.figure_subject in subjects)) {
        error "--figure_subject ${params.figure_subject} is not a subject of the input (${subjects.join(', ')})"
    }
    return params.figure_subject
}
