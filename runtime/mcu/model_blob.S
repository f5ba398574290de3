/* model_blob.S -- a model file's bytes in flash as the const array bnn_model_blob (8-byte aligned, as bnn.h needs),
 * bnn_model_blob_size its length. MODEL_FILE: the file's path, given by the Makefile. */
    .section .rodata.bnn_model, "a"
    .balign 8
    .global bnn_model_blob
bnn_model_blob:
    .incbin MODEL_FILE
bnn_model_blob_end:
    .balign 4
    .global bnn_model_blob_size
bnn_model_blob_size:
    .word bnn_model_blob_end - bnn_model_blob
