/*
 * --mode train (or --train_input): PREPARE -> TRAIN_STAGE1, TRAIN_BASELINE for each of
 * --train_baselines -> inference of the --refine_method on the training subjects (with its model
 * trained here or given) -> TRAIN_STAGE2. Training subjects are prepared in evaluate mode, the
 * mode every training reads.
 */

include { PREPARE        } from '../modules/local/prepare'
include { TRAIN_STAGE1   } from '../modules/local/train_stage1'
include { TRAIN_STAGE2   } from '../modules/local/train_stage2'
include { TRAIN_BASELINE } from '../modules/local/train_baseline'
include { FILL           } from '../subworkflows/local/fill'

workflow TRAINING {
    take:
    ch_scans       // [ meta, scan ]
    baselines      // learned baselines to train (list of tssc-train-baseline --model names)
    train_stage2   // false: stage 1 and the baselines only (--skip_refine)
    refine_method  // the method whose output on the training subjects stage 2 learns to refine
    refine_kind    // the checkpoint kind of refine_method's model (null: a method without one)
    refine_given   // its checkpoint/ folder when no model of that kind is trained here (a list)

    main:
    PREPARE(ch_scans)
    ch_volumes = PREPARE.out.prepared.map { meta, volume, record -> volume }.collect()
    ch_records = PREPARE.out.prepared.map { meta, volume, record -> record }.collect()

    TRAIN_STAGE1(ch_volumes, ch_records)

    TRAIN_BASELINE(ch_volumes, ch_records, channel.fromList(baselines))

    ch_refine_checkpoint = channel.empty()
    if (train_stage2) {
        // The refine method runs with its own model: stage 1 or the baseline of that name trained
        // here (each baseline's checkpoint is baselines/MODEL/checkpoint), else the given one.
        def ch_refine_model = refine_given
        if (refine_kind == 'stage1') {
            ch_refine_model = TRAIN_STAGE1.out.checkpoint
        }
        else if (refine_kind in baselines) {
            ch_refine_model = TRAIN_BASELINE.out.checkpoint
                .filter { folder -> folder.parent.name == refine_kind }
                .collect()
        }
        FILL(PREPARE.out.prepared, [refine_method], ch_refine_model)
        TRAIN_STAGE2(ch_volumes, ch_records, FILL.out.filled.map { meta, filled, record -> filled }.collect())
        ch_refine_checkpoint = TRAIN_STAGE2.out.checkpoint
    }

    emit:
    checkpoints       = TRAIN_STAGE1.out.checkpoint.mix(TRAIN_BASELINE.out.checkpoint)  // checkpoint/ folders: stage 1 and each baseline
    refine_checkpoint = ch_refine_checkpoint  // stage-2 checkpoint folder (none with --skip_refine)
}
