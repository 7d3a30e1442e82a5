// PackRead: rows of the shards' packed segment arrays (genre_classification/features/packs.py), read
// by pread(2) into the op's output tensor inside tf.data's own threads, without Python or the
// GIL. Built and loaded by genre_classification/features/pack_op.py; equal to packs.PackReader.read.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
namespace shape_inference = tensorflow::shape_inference;

REGISTER_OP("PackRead")
    .Input("packs: int32")
    .Input("rows: int64")
    .Attr("paths: list(string)")
    .Attr("offsets: list(int)")
    .Attr("segment_shape: list(int)")
    .Output("segments: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      std::vector<int64_t> shape;
      TF_RETURN_IF_ERROR(c->GetAttr("segment_shape", &shape));
      std::vector<shape_inference::DimensionHandle> dims = {c->Dim(c->input(1), 0)};
      for (int64_t d : shape) dims.push_back(c->MakeDim(d));
      c->set_output(0, c->MakeShape(dims));
      return absl::OkStatus();
    });

class PackReadOp : public OpKernel {
 public:
  explicit PackReadOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("paths", &paths_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("offsets", &offsets_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("segment_shape", &shape_));
    OP_REQUIRES(ctx, offsets_.size() == paths_.size(),
                absl::InvalidArgumentError("one offset per pack path"));
    row_bytes_ = sizeof(float);
    for (int64_t d : shape_) row_bytes_ *= d;
    for (const std::string& path : paths_) {
      int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      OP_REQUIRES(ctx, fd >= 0,
                  absl::NotFoundError(absl::StrCat(path, ": ", strerror(errno),
                                                   ": rerun snakemake to rebuild the pack")));
      fds_.push_back(fd);
    }
  }

  ~PackReadOp() override {
    for (int fd : fds_) close(fd);
  }

  // Segment i of the output is row rows[i] of pack packs[i]; a run of consecutive rows of one
  // pack (a track, read in order) is one read.
  void Compute(OpKernelContext* ctx) override {
    const auto packs = ctx->input(0).flat<int32_t>();
    const auto rows = ctx->input(1).flat<int64_t>();
    const int64_t n = rows.size();
    OP_REQUIRES(ctx, packs.size() == n,
                absl::InvalidArgumentError("packs and rows differ in length"));
    TensorShape shape({n});
    for (int64_t d : shape_) shape.AddDim(d);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, shape, &out));
    char* base = reinterpret_cast<char*>(out->flat<float>().data());
    for (int64_t i = 0; i < n;) {
      const int32_t pack = packs(i);
      OP_REQUIRES(ctx, pack >= 0 && pack < static_cast<int32_t>(fds_.size()) && rows(i) >= 0,
                  absl::InvalidArgumentError(absl::StrCat("no row ", rows(i), " of pack ", pack)));
      int64_t end = i + 1;
      while (end < n && packs(end) == pack && rows(end) == rows(end - 1) + 1) ++end;
      const int64_t want = (end - i) * row_bytes_;
      const int64_t at = offsets_[pack] + rows(i) * row_bytes_;
      for (int64_t got = 0; got < want;) {
        const ssize_t r = pread(fds_[pack], base + i * row_bytes_ + got, want - got, at + got);
        if (r < 0 && errno == EINTR) continue;
        OP_REQUIRES(ctx, r > 0,
                    absl::DataLossError(absl::StrCat(
                        paths_[pack], ": short read at row ", rows(i),
                        " (truncated pack?): delete it and rerun snakemake to rebuild it")));
        got += r;
      }
      i = end;
    }
  }

 private:
  std::vector<std::string> paths_;
  std::vector<int64_t> offsets_, shape_;
  std::vector<int> fds_;
  int64_t row_bytes_;
};

REGISTER_KERNEL_BUILDER(Name("PackRead").Device(tensorflow::DEVICE_CPU), PackReadOp);
