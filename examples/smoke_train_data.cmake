# End-to-end runs of examples/train.cpp on data beyond CIFAR's format:
#   cmake -DTRAIN=<train binary> -DWORK=<scratch folder> -DTABLES=<tests/data/tables> -P smoke_train_data.cmake
# Fashion-MNIST's IDX folder (when Debian's dataset-fashion-mnist is installed) with the classic
# LeNet-5 sized from the data, the wine table (.npz) with an MLP, the diabetes table (real-valued
# targets: MSE), and refusals that name what is wrong. WORK is emptied first.
cmake_minimum_required(VERSION 3.25)
foreach(var TRAIN WORK TABLES)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "smoke_train_data.cmake: pass -D${var}=...")
  endif()
endforeach()
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

function(run_train expect_success log)
  execute_process(COMMAND "${TRAIN}" ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  file(WRITE "${WORK}/${log}.log" "exit ${rc}\n--- stdout\n${out}\n--- stderr\n${err}")
  if(expect_success AND NOT rc EQUAL 0)
    message(FATAL_ERROR "train ${ARGN}\nexited with ${rc}\nstdout:\n${out}\nstderr:\n${err}")
  endif()
  if(NOT expect_success AND NOT rc EQUAL 1)
    message(FATAL_ERROR "train ${ARGN}\nexited with ${rc}, expected 1 (an error)\nstdout:\n${out}\nstderr:\n${err}")
  endif()
  set(last_stdout "${out}" PARENT_SCOPE)
  set(last_stderr "${err}" PARENT_SCOPE)
endfunction()

# The test accuracy (or MSE) line of the output, as a number.
function(test_value pattern result)
  if(NOT last_stdout MATCHES "${pattern} ([0-9.e+-]+)")
    message(FATAL_ERROR "no '${pattern}' in the output:\n${last_stdout}")
  endif()
  set(${result} ${CMAKE_MATCH_1} PARENT_SCOPE)
endfunction()

# --- Fashion-MNIST's IDX files, the classic LeNet-5 sized from them ---------------------------------
set(fashion /usr/share/datasets/fashion-mnist)
if(EXISTS "${fashion}/train-images-idx3-ubyte.gz")
  run_train(TRUE fashion --data ${fashion} --model lenet5-classic --subset 3000 --epochs 2 --batch-size 32
            --lr 0.05 --no-augmentation --log-every 0 --out "${WORK}/fashion")
  test_value("top-1" accuracy)
  if(accuracy LESS 0.6)
    message(FATAL_ERROR "LeNet-5 on 3000 Fashion-MNIST images for 2 epochs: test top-1 ${accuracy}, expected > 0.6")
  endif()
  if(NOT EXISTS "${WORK}/fashion/train/sgdm/32/0.05/0.0004/2.npz")
    message(FATAL_ERROR "no checkpoint of the Fashion-MNIST run")
  endif()
else()
  message(WARNING "Fashion-MNIST is not installed (Debian: dataset-fashion-mnist): the IDX run is not checked")
endif()

# --- a table from an .npz with an MLP; --resume continues it ---------------------------------------
set(wine --data "${TABLES}/wine.npz" --model mlp:32 --batch-size 16 --lr 0.05 --log-every 0 --out "${WORK}/wine")
run_train(TRUE wine ${wine} --epochs 15)
test_value("top-1" accuracy)
if(accuracy LESS 0.85)
  message(FATAL_ERROR "an MLP on the wine table: test top-1 ${accuracy}, expected > 0.85")
endif()
run_train(TRUE wine_resume ${wine} --epochs 17 --resume)
if(NOT last_stdout MATCHES "status +completed after 17 epochs")
  message(FATAL_ERROR "the resumed wine run does not report 17 epochs:\n${last_stdout}")
endif()

# --- real-valued targets: MSE, the best epoch by validation loss ------------------------------------
run_train(TRUE diabetes --data "${TABLES}/diabetes.npz" --model mlp:16 --optimizer adamw --lr 0.05 --weight-decay 0
          --batch-size 32 --epochs 40 --log-every 0 --out "${WORK}/diabetes")
test_value("MSE" mse)
if(mse GREATER 4500)
  message(FATAL_ERROR "an MLP on the diabetes table: test MSE ${mse}, expected < 4500 (the targets' variance is about 5900)")
endif()

# --- refusals that name what is wrong --------------------------------------------------------------
run_train(FALSE lenet_on_table --data "${TABLES}/wine.npz" --model lenet5 --out "${WORK}/bad")
if(NOT last_stderr MATCHES "LeNet-5 reads images" OR NOT last_stderr MATCHES "\\[13\\]")
  message(FATAL_ERROR "LeNet-5 on a table should be refused naming the sample shape:\n${last_stderr}")
endif()
run_train(FALSE bad_mlp --data "${TABLES}/wine.npz" --model mlp:32,x --out "${WORK}/bad")
if(NOT last_stderr MATCHES "mlp:32,x" OR NOT last_stderr MATCHES "'x'")
  message(FATAL_ERROR "a bad MLP width should be named:\n${last_stderr}")
endif()
if(EXISTS "${WORK}/bad/train")
  message(FATAL_ERROR "a refused run still wrote ${WORK}/bad/train")
endif()
message(STATUS "examples.train.data: all checks passed (logs in ${WORK})")
