// Calls the sgg ops from C++ with no Python: loads the operator library, calls the ops through the
// dispatcher, then (optionally) runs a TorchScript module and an AOTInductor package that call them.
//
//   sgg_cpp_example LIBRARY [--torchscript MODULE.pt] [--aoti PACKAGE.pt2]
//
// LIBRARY is what `python -c "import sgg_kernels; print(sgg_kernels.library_path())"` prints (run it
// outside a source checkout, or after building one in place). examples/cpp/export_modules.py writes a
// module and a package of the signatures expected here (x, cond, uncond, weak: float32 [B, 4, 8, 8];
// shared: float32 [2]; weights, step: float32 [B, 2]):
//   MODULE.pt:   forward(x, cond, uncond, weak, weights, step) -> guided_step(...), B = 2
//   PACKAGE.pt2: (x, cond, uncond, weak, shared, weights, step) -> (guide with the shared weights,
//                guided_step with the per-sample weights, ...), run at B = 1, 3 and 5
// Every result is compared with the formula computed here in float64; the exit code says whether all
// agree (0), some differ or a module does not run (1), or the command line is wrong (2).
#include <ATen/core/dispatch/Dispatcher.h>
#include <dlfcn.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

int g_failures = 0;

void expect_close(const std::string& what, const Tensor& got, const Tensor& want) {
  const double err = (got.to(at::kDouble) - want).abs().max().item<double>();
  const bool ok = got.sizes() == want.sizes() && err < 1e-5;
  std::cout << (ok ? "ok   " : "FAIL ") << what << ": max abs error " << err << "\n";
  g_failures += !ok;
}

// x_next = a * x + b * (c + w_u (c - u) + w_w (c - w)) in float64, per-sample coefficients [B, 2].
Tensor reference(const Tensor& x, const Tensor& c, const Tensor& u, const Tensor& w, const Tensor& weights,
                 const Tensor& step) {
  const auto col = [&](const Tensor& t, int64_t k) {
    std::vector<int64_t> shape(c.dim(), 1);
    shape[0] = -1;
    return t.select(-1, k).to(at::kDouble).reshape(shape);
  };
  const Tensor cd = c.to(at::kDouble);
  const Tensor guide = cd + col(weights, 0) * (cd - u.to(at::kDouble)) + col(weights, 1) * (cd - w.to(at::kDouble));
  return col(step, 0) * x.to(at::kDouble) + col(step, 1) * guide;
}

struct Inputs {
  Tensor x, cond, uncond, weak, weights, step;
  explicit Inputs(int64_t batch) {
    x = at::randn({batch, 4, 8, 8});
    cond = at::randn_like(x);
    uncond = at::randn_like(x);
    weak = at::randn_like(x);
    weights = at::rand({batch, 2});
    step = at::rand({batch, 2});
  }
};

void call_through_dispatcher() {
  const Inputs in(3);
  // The C++ signature lists every schema argument, the optional noise (a stochastic step) included.
  auto guided_step = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("sgg::guided_step", "")
                         .typed<Tensor(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
                                       const Tensor&, const Tensor&, const OptTensor&)>();
  const Tensor want = reference(in.x, in.cond, in.uncond, in.weak, in.weights, in.step);
  expect_close("sgg::guided_step",
               guided_step.call(in.x, in.cond, in.uncond, in.weak, in.weights, in.step, std::nullopt), want);

  // A stochastic step: step = (a, b, c) per sample, x_next = a x + b guide + c noise, in the same pass.
  const Tensor noise = at::randn_like(in.x), step3 = at::rand({3, 3});
  const Tensor want_noisy = reference(in.x, in.cond, in.uncond, in.weak, in.weights, step3.slice(1, 0, 2)) +
                            step3.select(1, 2).to(at::kDouble).reshape({-1, 1, 1, 1}) * noise.to(at::kDouble);
  expect_close("sgg::guided_step with noise",
               guided_step.call(in.x, in.cond, in.uncond, in.weak, in.weights, step3, noise), want_noisy);

  auto guided_step_ = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("sgg::guided_step_", "")
                          .typed<void(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
                                      const Tensor&, const Tensor&, const OptTensor&)>();
  const Tensor x = in.x.clone();
  guided_step_.call(x, in.cond, in.uncond, in.weak, in.weights, in.step, std::nullopt);
  expect_close("sgg::guided_step_ (in place)", x, want);

  // Bad input: the C++ checks name the argument (a std::runtime_error: the only exception type the
  // stable ABI carries), and x is left as it was.
  const Tensor before = x.clone();
  try {
    guided_step_.call(x, in.cond, in.uncond, in.weak, at::rand({3}), in.step, std::nullopt);
    std::cout << "FAIL weights of shape [3] were accepted\n";
    ++g_failures;
  } catch (const std::runtime_error& e) {
    const bool named = std::strstr(e.what(), "weights must have shape") != nullptr;
    const bool untouched = at::equal(x, before);
    std::cout << (named && untouched ? "ok   " : "FAIL ") << "bad weights refused: " << e.what() << "\n";
    g_failures += !(named && untouched);
  }
}

// The module computes guided_step(x, cond, uncond, weak, weights, step) (tests/test_deployment.py).
void run_torchscript(const std::string& path) {
  torch::jit::Module module = torch::jit::load(path);
  const Inputs in(2);
  const Tensor got = module.forward({in.x, in.cond, in.uncond, in.weak, in.weights, in.step}).toTensor();
  expect_close("TorchScript module", got, reference(in.x, in.cond, in.uncond, in.weak, in.weights, in.step));
}

// The package returns (guide with shared weights [2], guided_step with per-sample [B, 2]), for any B.
void run_aoti(const std::string& path) {
  torch::inductor::AOTIModelPackageLoader loader(path);
  for (int64_t batch : {1, 3, 5}) {
    const Inputs in(batch);
    const Tensor shared = at::tensor({0.5f, 0.25f});
    const std::vector<Tensor> out =
        loader.run({in.x, in.cond, in.uncond, in.weak, shared, in.weights, in.step});
    const Tensor ones = at::ones({batch, 2});
    const Tensor guide = reference(at::zeros_like(in.x), in.cond, in.uncond, in.weak, shared.expand({batch, 2}),
                                   ones.index_fill(1, at::tensor({0L}), 0.0));
    expect_close("AOTInductor package, guide, B=" + std::to_string(batch), out.at(0), guide);
    expect_close("AOTInductor package, guided_step, B=" + std::to_string(batch), out.at(1),
                 reference(in.x, in.cond, in.uncond, in.weak, in.weights, in.step));
  }
}

// Runs one deployed-model check; a module of another signature is reported, not an abort.
void run_checked(const std::string& what, const std::string& path, const std::function<void(const std::string&)>& run) {
  try {
    run(path);
  } catch (const std::exception& e) {
    const c10::Error* error = dynamic_cast<const c10::Error*>(&e);
    std::cout << "FAIL " << what << " " << path << " did not run: "
              << (error ? error->what_without_backtrace() : e.what())
              << "\n     (expected signatures: see the top of examples/cpp/main.cpp; "
                 "examples/cpp/export_modules.py writes them)\n";
    ++g_failures;
  }
}

int usage(const char* program, const std::string& problem) {
  std::cerr << program << ": " << problem << "\nusage: " << program
            << " LIBRARY... [--torchscript MODULE.pt] [--aoti PACKAGE.pt2]\n"
               "  LIBRARY...: the core library, then the CUDA one where it was built:\n"
               "  $(cd / && python -c \"import sgg_kernels; print(*sgg_kernels.library_paths())\")\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int i = 1;
  for (; i < argc && std::string(argv[i]).rfind("--", 0) != 0; ++i) {
    if (argv[i][0] == '\0') return usage(argv[0], "no LIBRARY given (an empty path: did the python command fail?)");
    std::error_code missing;
    if (!std::filesystem::is_regular_file(argv[i], missing))
      return usage(argv[0], std::string("LIBRARY ") + argv[i] + " is not a file");
    // Loading runs the library's static registrations: the sgg ops join the dispatcher. The CUDA
    // library finds the core one next to it.
    if (!dlopen(argv[i], RTLD_NOW | RTLD_GLOBAL)) {
      std::cerr << "cannot load " << argv[i] << ": " << dlerror() << "\n";
      return 2;
    }
  }
  if (i == 1) return usage(argv[0], "no LIBRARY given");
  if (!c10::Dispatcher::singleton().findSchema({"sgg::guided_step", ""})) {
    return usage(argv[0], std::string(argv[1]) + " defines no sgg ops: it is not sgg_kernels' operator library");
  }
  std::vector<std::pair<std::string, std::string>> modules;  // option, path
  for (; i < argc; i += 2) {
    const std::string option = argv[i];
    if (option != "--torchscript" && option != "--aoti") return usage(argv[0], "unknown option " + option);
    if (i + 1 >= argc || argv[i + 1][0] == '\0') return usage(argv[0], option + " needs a file");
    modules.emplace_back(option, argv[i + 1]);
  }
  at::manual_seed(0);
  call_through_dispatcher();
  for (const auto& [option, path] : modules) {
    if (option == "--torchscript") run_checked("TorchScript module", path, run_torchscript);
    else run_checked("AOTInductor package", path, run_aoti);
  }
  std::cout << (g_failures ? "FAILED\n" : "all ok\n");
  return g_failures ? 1 : 0;
}
