#!/usr/bin/env bash
# One pass over Fashion-MNIST's 60k training images with configs/fashion-mnist.ini, in fp32 and in
# bf16 (and fp16, emulated with loss scaling): test accuracy on the 10k test images must reach 0.84 (the issue's bar).
source "$(dirname "$0")/lib.bash"
need_fashion_mnist train-images-idx3-ubyte.gz
for prec in fp32 bf16 fp16; do
  check_rc 0 "fashion-mnist $prec" -- "$EDDY" learn -c "$SRC/configs/fashion-mnist.ini" \
    --data fashion-mnist:train --test fashion-mnist:test --json --set train.precision=$prec
  cat "$TMP/out"
  check_py "$prec: 60000 examples, 10000 test" 'j["examples"] == 60000 and j["test_examples"] == 10000'
  check_py "$prec: test accuracy >= 0.84" 'j["test_accuracy"] >= 0.84'
  check_py "$prec: no skipped steps" 'j["skipped_steps"] == 0'
done
finish
