#ifndef ILA_COPENBLAS_SHIM_H
#define ILA_COPENBLAS_SHIM_H
#include <cblas.h>

// LAPACK routines shipped inside libopenblas (Fortran ABI); declared here so that no LAPACKE
// package is needed.
void sgesdd_(const char *jobz, const int *m, const int *n, float *a, const int *lda, float *s,
             float *u, const int *ldu, float *vt, const int *ldvt, float *work, const int *lwork,
             int *iwork, int *info);
void ssyevd_(const char *jobz, const char *uplo, const int *n, float *a, const int *lda, float *w,
             float *work, const int *lwork, int *iwork, const int *liwork, int *info);
#endif
