// What ILAMask's API hands out (BaseModel.spec, TokenizedRow rows) comes from ILAModel.
@_exported import ILAModel
