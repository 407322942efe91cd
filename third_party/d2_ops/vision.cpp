// seld_d2's minimal op library for Detectron2 0.6 (installed as detectron2/layers/csrc/vision.cpp).
//
// The pb1-detectron2 sdist ships Detectron2's Python code without its C++ sources. seld_d2 needs
// none of upstream's custom ops: box ROIAlign and NMS come from torchvision. This module only
// provides the small introspection functions that detectron2.utils.collect_env queries, so that
// `import detectron2._C` succeeds. Rotated boxes and deformable convolution are NOT available.
#include <torch/extension.h>

#include <string>

namespace seld_d2_ops {

std::string get_compiler_version() {
#if defined(__GNUC__) && !defined(__clang__)
  return "GCC " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__);
#elif defined(__clang__)
  return std::string("clang ") + __clang_version__;
#else
  return "unknown";
#endif
}

std::string get_cuda_version() { return "not built"; }

bool has_cuda() { return false; }

}  // namespace seld_d2_ops

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "seld_d2 minimal Detectron2 op library: no custom ops registered";
  m.def("get_compiler_version", &seld_d2_ops::get_compiler_version);
  m.def("get_cuda_version", &seld_d2_ops::get_cuda_version);
  m.def("has_cuda", &seld_d2_ops::has_cuda);
}
